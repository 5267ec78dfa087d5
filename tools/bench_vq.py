"""Encode and decode throughput of the vector quantizers against the BLAS matrix product their search is.

For each spec, on one float32 vector of ``--d`` standard normals (default 2^20):

* encode ``C.encode(x, key)`` and decode ``C.decode(msg, d, key)``, best of ``--repeat`` after one
  untimed warm-up call (JIT compilation, the HSQ codebook, the StoVoQ radial table), in elements/s;
* the BLAS product of the same size as the codebook search (``L x (size + 1)`` buckets against
  ``(size + 1) x 2^P`` codewords in float32 for StoVoQ and HSQ-greedy, ``L x size`` against the
  ``size x 2^(P-1)`` decomposition in float64 for HSQ-span; L = d / size), run exactly as the
  search runs it: in the same tiles, over
  the same threads, BLAS single-threaded, but with no codebook to draw, no argmax and no packing.
  Timed interleaved with the codec (a shared machine's load hits both alike). The ratio
  encode / GEMM elements/s says how close encoding gets to the product it cannot avoid.
  Cross-polytope has no search (no GEMM column): its work is linear in d, like a scalar codec's,
  so it is measured against ``np.copyto`` of a float32 vector of the same size, timed alike, at the
  scalar codecs' size ``--copy-d`` (default 2^24, as ``bench_kernels.py``): at 2^20 the copy stays in
  cache and the ratio measures cache speed, not the memory-bound copy the target is stated against.
* ``np.copyto`` of that float32 vector, timed alike for every spec: ``decode/copyto`` is the decode's
  rate against it (a decode writes d float64 values from one codeword per bucket: linear in d).

* the machine's GEMM rate: a 1024-square product on one BLAS thread in the search's dtype (float32;
  float64 for HSQ-span, whose flops run at half the float32 rate), ``peak GFLOP/s``, timed alike;
  ``bound el/s`` is the encode rate if the search's flops (``search GFLOP``) ran at it.

Kernels and tiles run on ``--threads`` numba threads (default 1), BLAS on one thread per tile. The
last lines are one machine-readable verdict per target (``PASS|MISS <spec> encode <ratio>x >=
<target>x``): encode at 0.5x the same-shape GEMM and 0.5x the peak-rate bound (StoVoQ, HSQ), at
0.33x copyto (cross-polytope).

Run: ``python tools/bench_vq.py [--d 1048576] [--repeat 3] [--only stovoq] [--threads 1]``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numba
import numpy as np
from bench_kernels import CLOCKS, best_rates, verdict  # this folder is on sys.path when the script runs

from mpicomp.compressors import Compressor, make
from mpicomp.compressors._codebook import _threadpools, tile_rows, tiled
from mpicomp.rng import RandomKey

GEMM_TARGET = 0.5  # encode rate / the rate of its search's GEMM alone
COPY_TARGET = 0.33  # encode rate / np.copyto rate, for a codec without a search
SPECS = (
    "stovoq(P=13,R=3,size=16)",
    "stovoq(P=13,R=0,size=16,unbiased=False)",
    "hsq(mode=greedy,P=10,R=6,size=16)",
    "hsq(mode=span,P=10,R=6,size=16)",
    "cross-polytope(samples=2,size=16)",
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=2**20, help="vector dimension (default 2**20)")
    parser.add_argument(
        "--copy-d", type=int, default=2**24, help="dimension for the codecs without a search (default 2**24)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed repeats, best kept (default 3)")
    parser.add_argument("--only", action="append", metavar="NAME", help="only specs whose name is NAME (repeatable)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the vector and the key")
    parser.add_argument("--threads", type=int, default=1, help="numba threads for the kernels and tiles (default 1)")
    parser.add_argument(
        "--clock", choices=tuple(CLOCKS), default="wall", help="wall or process CPU time (default wall)"
    )
    args = parser.parse_args()
    if args.d < 1 or args.copy_d < 1 or args.repeat < 1:
        parser.error("--d, --copy-d and --repeat must be >= 1")
    return args


def search_product(compressor: Compressor) -> tuple[int, int, type]:
    """(inner width, columns, dtype) of the search's matrix product; 0 columns without a search.

    StoVoQ and HSQ-greedy: ``[b, 1]`` against 2^P codewords in float32; HSQ-span: the decomposition
    ``b (U^T U)^-1 U^T`` over the 2^(P-1) directions in float64.
    """
    if compressor.name == "stovoq" or (compressor.name == "hsq" and not compressor.unbiased):
        return compressor.size + 1, 2**compressor.P, np.float32
    if compressor.name == "hsq":
        return compressor.size, 2 ** (compressor.P - 1), np.float64
    return 0, 0, np.float32


def tiled_gemm(n_rows: int, width: int, m: int, dtype: type) -> Callable[[], object]:
    """The search's product without the search, in its tiles and threads."""
    rng = np.random.default_rng(1)
    left = rng.standard_normal((n_rows, width)).astype(dtype)
    right = rng.standard_normal((width, m)).astype(dtype)
    step = tile_rows(m)

    def product(first: int, end: int) -> int:
        scores = np.empty((step, m), dtype=dtype)
        for tile in range(first, end):
            rows = slice(tile * step, min(n_rows, (tile + 1) * step))
            np.matmul(left[rows], right, out=scores[: rows.stop - rows.start])
        return -1

    return lambda: tiled(product, n_rows, m)


PEAK_SIZE = 1024  # the square product that measures the machine's GEMM rate


def peak_gemm(dtype: type) -> Callable[[], object]:
    """A ``PEAK_SIZE``-square product in ``dtype`` on one BLAS thread: the machine's GEMM rate."""
    rng = np.random.default_rng(2)
    left, right = (rng.standard_normal((PEAK_SIZE, PEAK_SIZE)).astype(dtype) for _ in range(2))
    out = np.empty_like(left)

    def product() -> None:
        with _threadpools().limit(limits=1, user_api="blas"):
            np.matmul(left, right, out=out)

    return product


def main() -> None:
    args = parse_args()
    numba.set_num_threads(args.threads)
    key = RandomKey(args.seed, 1, 0, 0)
    print(
        f"d = {args.d} (codecs without a search: {args.copy_d}), float32 input, {numba.get_num_threads()} threads,"
        f" best of {args.repeat}, {args.clock} clock"
    )
    print(
        f"{'spec':<42s} {'encode el/s':>12s} {'decode el/s':>12s} {'GEMM el/s':>12s} {'GEMM GFLOP/s':>12s}"
        f" {'search GFLOP':>12s} {'encode/GEMM':>11s} {'copyto el/s':>12s} {'peak GFLOP/s':>10s} {'bound el/s':>12s}"
        f" {'decode/copyto':>13s}"
    )
    summary = []
    for spec in SPECS:
        compressor = make(spec)
        if args.only and compressor.name not in args.only:
            continue
        width, m, dtype = search_product(compressor)
        d = args.d if m else args.copy_d
        x = np.random.default_rng(args.seed).standard_normal(d).astype(np.float32)
        copy_target = np.empty_like(x)
        message = compressor.encode(x, key)
        timers = {
            "encode": lambda c=compressor, x=x: c.encode(x, key),
            "decode": lambda c=compressor, m=message, d=d: c.decode(m, d, key),
            "copyto": lambda x=x, y=copy_target: np.copyto(y, x),
        }
        n_rows = -(-d // compressor.size)
        if m:
            timers["gemm"] = tiled_gemm(n_rows, width, m, dtype)
            timers["peak"] = peak_gemm(dtype)
        rates = best_rates(d, timers, args.repeat, args.clock)
        line = f"{compressor.spec:<42s} {rates['encode']:12.3e} {rates['decode']:12.3e}"
        if m:
            search = 2.0 * n_rows * width * m
            flops = search * rates["gemm"] / d
            ratio = rates["encode"] / rates["gemm"]
            peak = 2.0 * PEAK_SIZE**3 * rates["peak"] / d  # flop/s of the square product
            bound = peak * d / search  # elements/s if the search ran at the peak rate
            line += (
                f" {rates['gemm']:12.3e} {flops / 1e9:12.1f} {search / 1e9:12.2f} {ratio:11.2f} {rates['copyto']:12.3e}"
            )
            line += f" {peak / 1e9:10.1f} {bound:12.3e}"
            summary.append(verdict(compressor.spec, "encode", ratio, GEMM_TARGET, "x of same-shape GEMM"))
            summary.append(verdict(compressor.spec, "encode", rates["encode"] / bound, GEMM_TARGET, "x of peak GEMM"))
        else:
            ratio = rates["encode"] / rates["copyto"]
            line += f" {'-':>12s} {'-':>12s} {'-':>12s} {'-':>11s} {rates['copyto']:12.3e} {'-':>10s} {'-':>12s}"
            summary.append(verdict(compressor.spec, "encode", ratio, COPY_TARGET, "x of copyto"))
        print(line + f" {rates['decode'] / rates['copyto']:13.2f}", flush=True)
    print(f"targets ({numba.get_num_threads()} thread(s)):")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
