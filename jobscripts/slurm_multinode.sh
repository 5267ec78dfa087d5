#!/usr/bin/env bash
# Several nodes, several ranks per node:  sbatch jobscripts/slurm_multinode.sh CONFIG.toml [--set k=v ...]
# 2 nodes x 4 tasks by default; scale on the command line:
#   sbatch --nodes=4 --ntasks-per-node=32 jobscripts/slurm_multinode.sh CONFIG.toml
# Use the cluster's MPI (mpi4py built against it, no `mpich` extra) so srun and MPI agree;
# add --mpi=pmix or --mpi=pmi2 to srun if your site needs it (mpicomp says so when they disagree).
#SBATCH --job-name=mpicomp-multi
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --cpus-per-task=1
#SBATCH --time=02:00:00
#SBATCH --output=mpicomp-%j.out
set -euo pipefail
config=${1:?usage: sbatch slurm_multinode.sh CONFIG.toml [--set section.key=value ...]}
shift
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
mkdir -p results
srun mpicomp run "$config" --out "results/$(basename "$config" .toml)-${SLURM_JOB_ID:?run with sbatch}.h5" "$@"
