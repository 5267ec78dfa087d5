#!/usr/bin/env bash
# A job-array sweep over uplink compressors, one array task per spec:
#   sbatch --array=0-4 jobscripts/slurm_sweep.sh CONFIG.toml [--set section.key=value ...]
# Extra --set arguments apply to every task. Each task writes
#   results/sweep/<config>-<array job id>_<task id>.h5
# so a resubmitted sweep never collides with an earlier one; compare a sweep with
#   mpicomp compare 'results/sweep/<config>-<array job id>_*.h5'
#SBATCH --job-name=mpicomp-sweep
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=mpicomp-%A_%a.out
set -euo pipefail
config=${1:?usage: sbatch --array=0-4 slurm_sweep.sh CONFIG.toml [--set section.key=value ...]}
shift
specs=(identity natural "natdither(s=4,p=inf)" "qsgd(s=4)" "natural∘randk(k=0.1)")
task=${SLURM_ARRAY_TASK_ID:?run with sbatch --array=0-$((${#specs[@]} - 1))}
if (( task < 0 || task >= ${#specs[@]} )); then
  echo "slurm_sweep.sh: array task $task has no spec; use --array=0-$((${#specs[@]} - 1))" >&2
  exit 2
fi
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
mkdir -p results/sweep
srun mpicomp run "$config" --set "compressor.uplink=\"${specs[$task]}\"" \
  --out "results/sweep/$(basename "$config" .toml)-${SLURM_ARRAY_JOB_ID:-${SLURM_JOB_ID:?run with sbatch}}_${task}.h5" \
  "$@"
