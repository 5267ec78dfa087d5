#!/usr/bin/env bash
# The papers' claims (`mpicomp reproduce`, docs/reproductions.md) on SLURM. As a job array, one run
# of the selected claims per task (claims in `--list` order, each claim's runs in order):
#   sbatch --array=0-$(($(mpicomp reproduce --full --count) - 1)) jobscripts/slurm_reproduce.sh --full
# then, without --array, once the tasks have ended: it finds every run done, measures, judges and
# writes results/reproduce/<claim>/report.md (runs still missing are run first):
#   sbatch --dependency=afterany:<array job id> jobscripts/slurm_reproduce.sh --full
# Extra arguments reach `mpicomp reproduce` (claim names, --quick or --full, --out DIR, -n RANKS;
# default -n $SLURM_NTASKS). Finished runs are skipped, so resubmitting completes an interrupted suite.
#SBATCH --job-name=mpicomp-reproduce
#SBATCH --ntasks=4
#SBATCH --cpus-per-task=1
#SBATCH --time=02:00:00
#SBATCH --output=mpicomp-reproduce-%A_%a.out
set -euo pipefail
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
exec mpicomp reproduce --out results/reproduce -n "${SLURM_NTASKS:-4}" "$@"
