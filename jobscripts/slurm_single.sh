#!/usr/bin/env bash
# One run on a SLURM cluster:  sbatch jobscripts/slurm_single.sh CONFIG.toml [--set section.key=value ...]
# 4 tasks by default, so that it starts on a small partition; ask for more on the command line
# (the options there override these lines):  sbatch --ntasks=16 jobscripts/slurm_single.sh CONFIG.toml
# A job that stays pending says why in `squeue -j JOBID -o "%.10i %.9T %R"` (Resources, Priority,
# PartitionNodeLimit...). If srun's MPI plugin does not match the MPI mpi4py uses, mpicomp stops at
# once with a hint (e.g. add --mpi=pmi2 for MPICH or --mpi=pmix for Open MPI to the srun line).
#SBATCH --job-name=mpicomp
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=mpicomp-%j.out
set -euo pipefail
config=${1:?usage: sbatch slurm_single.sh CONFIG.toml [--set section.key=value ...]}
shift
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} NUMBA_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
mkdir -p results
srun mpicomp run "$config" --out "results/$(basename "$config" .toml)-${SLURM_JOB_ID:?run with sbatch}.h5" "$@"
