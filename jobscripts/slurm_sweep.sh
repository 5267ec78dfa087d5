#!/usr/bin/env bash
# Any sweep file (see jobscripts/configs/sweep-compressors.toml) on SLURM, through `mpicomp sweep`.
# As a job array, one point per task:
#   sbatch --array=0-$(($(mpicomp sweep SWEEP.toml --count) - 1)) jobscripts/slurm_sweep.sh SWEEP.toml
# or every point in one allocation, K at a time (K x ranks tasks):
#   sbatch --ntasks=8 jobscripts/slurm_sweep.sh SWEEP.toml -n 4 --parallel 2
# Results go to results/sweeps/<sweep name>/ (one file per point, sweep.json, logs/); extra
# arguments reach `mpicomp sweep` (e.g. --out DIR, -n RANKS; default -n $SLURM_NTASKS). Points
# already finished are skipped, so resubmitting the same command completes an interrupted sweep:
#   mpicomp compare results/sweeps/<sweep name> --group-seeds
#SBATCH --job-name=mpicomp-sweep
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=01:00:00
#SBATCH --output=mpicomp-%A_%a.out
set -euo pipefail
sweep=${1:?usage: sbatch [--array=0-N] slurm_sweep.sh SWEEP.toml [mpicomp sweep options]}
shift
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
exec mpicomp sweep "$sweep" --out "results/sweeps/$(basename "$sweep" .toml)" -n "${SLURM_NTASKS:-4}" "$@"
