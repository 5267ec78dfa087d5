#!/usr/bin/env bash
# One run on a SLURM cluster:  sbatch jobscripts/slurm_single.sh CONFIG.toml [--set section.key=value ...]
# 4 tasks by default, so that it starts on a small partition; ask for more on the command line
# (the options there override these lines):  sbatch --ntasks=16 jobscripts/slurm_single.sh CONFIG.toml
# A job that stays pending says why in `squeue -j JOBID -o "%.10i %.9T %R"` (Resources, Priority,
# PartitionNodeLimit...). If srun's MPI plugin does not match the MPI mpi4py uses, mpicomp stops at
# once with a hint (e.g. add --mpi=pmi2 for MPICH or --mpi=pmix for Open MPI to the srun line).
# Time limit: 120 s before it, Slurm sends USR1 to this script, which passes it to the run; the run
# writes a checkpoint, ends as "resumable" (exit status 3) and the script requeues the job. When it
# starts again (same job id, same results file) it continues with `mpicomp run --resume`. A job
# requeued by Slurm itself (preemption, node failure: SIGTERM, then the same checkpoint) resumes too.
#SBATCH --job-name=mpicomp
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=mpicomp-%j.out
#SBATCH --open-mode=append
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
set -euo pipefail
config=${1:?usage: sbatch slurm_single.sh CONFIG.toml [--set section.key=value ...]}
shift
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} NUMBA_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
mkdir -p results
out="results/$(basename "$config" .toml)-${SLURM_JOB_ID:?run with sbatch}.h5"
if [[ -e "$out.ckpt" || -e "$out.ckpt.prev" ]]; then
  args=(--resume "$out")  # a requeued job: the run's own config, from the results file
else
  args=("$config" --out "$out" "$@")
fi
srun mpicomp run "${args[@]}" &
step=$!
trap 'kill -USR1 "$step" 2>/dev/null || true' USR1
status=0
while true; do
  wait "$step" && status=0 || status=$?
  kill -0 "$step" 2>/dev/null || break  # still running: the wait was cut short by USR1
done
if (( status == 3 )); then  # resumable: a checkpoint was written
  scontrol requeue "$SLURM_JOB_ID"
fi
exit "$status"
