#!/usr/bin/env bash
# A job-array sweep over uplink compressors (one array task per spec):
#   sbatch --array=0-4 jobscripts/slurm_sweep.sh CONFIG.toml
#SBATCH --job-name=mpicomp-sweep
#SBATCH --ntasks=8
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=mpicomp-%A_%a.out
set -euo pipefail
config=${1:?usage: sbatch --array=0-4 slurm_sweep.sh CONFIG.toml}
specs=(identity natural "natdither(s=4,p=inf)" "qsgd(s=4)" "natural∘randk(k=0.1)")
spec=${specs[${SLURM_ARRAY_TASK_ID:?run with sbatch --array}]}
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
mkdir -p results/sweep
srun mpicomp run "$config" --set "compressor.uplink=\"$spec\"" \
  --out "results/sweep/$(basename "$config" .toml)-${SLURM_ARRAY_TASK_ID}.h5" --no-progress
