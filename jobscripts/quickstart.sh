#!/usr/bin/env bash
# Quick start: the same L2-logistic experiment with three uplink compressors on 4 MPI ranks
# (8 logical workers), then one table comparing them.
#   bash jobscripts/quickstart.sh [N_RANKS]
set -euo pipefail
cd "$(dirname "$0")/.."
ranks=${1:-4}
mkdir -p results/quickstart
for spec in identity natural "qsgd(s=4)"; do
  name=$(echo "$spec" | tr -c 'a-z0-9\n' '_' | sed 's/_*$//')
  mpiexec -n "$ranks" mpicomp run jobscripts/configs/quickstart.toml \
    --set "compressor.uplink=\"$spec\"" --out "results/quickstart/$name.h5" --overwrite
done
mpicomp compare results/quickstart --target loss=0.1
echo "Results: $(pwd)/results/quickstart/*.h5 (HDF5; schema in docs/results-format.md; mpicomp info FILE for one run)"
