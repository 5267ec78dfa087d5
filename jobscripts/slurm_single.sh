#!/usr/bin/env bash
# One run on a SLURM cluster:  sbatch jobscripts/slurm_single.sh CONFIG.toml [--set k=v ...]
#SBATCH --job-name=mpicomp
#SBATCH --ntasks=8
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=mpicomp-%j.out
set -euo pipefail
config=${1:?usage: sbatch slurm_single.sh CONFIG.toml [--set section.key=value ...]}
shift
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1} NUMBA_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}
mkdir -p results
srun mpicomp run "$config" --out "results/$(basename "$config" .toml)-$SLURM_JOB_ID.h5" --no-progress "$@"
