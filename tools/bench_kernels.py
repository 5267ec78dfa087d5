"""Throughput of every registered compressor's encode and decode, against np.copyto and plain NumPy.

For each spec (every name of mpicomp's own codecs in ``mpicomp.compressors.available()``, a plugin's
only when named with ``--only``; the parameterised specs that have
a NumPy reference, and compositions with a sparsifier when ``compose`` is registered), on one
vector of ``--d`` standard normals, float32 and float64 (the methods hand float64 to the codecs):

* encode ``C.encode(x, key, out=buffer)`` (into a reused message buffer where the codec's size is
  fixed), decode ``C.decode(msg, d, key, out=vector)`` and the master's fused
  ``C.decode_add(msg, total, key)``: rates in elements/s, best of ``--repeat`` after one untimed
  warm-up call (JIT compilation, page faults);
* ``np.copyto`` of a float32 array of the same size, timed in the same repeats (interleaved, so
  that a shared machine's load hits both alike); the ratio codec/copyto is the figure of merit;
* the same with the message CRC-32 (``[compressor] checksum``) switched off, to show its cost;
* the random draw alone, one SplitMix64 word per element into a uint64 array (``random_u64``, the
  draw of every randomized scalar codec), against the same copyto: the bound the draw puts on them;
* a straightforward NumPy version of the codec, from ``NUMPY_REFERENCES`` in
  ``tools/numpy_reference_quant.py`` and ``tools/numpy_reference_sparse.py``, when there is one.

Kernels run on ``--threads`` numba threads (default 1, as the targets are stated). The last lines
check the targets, one machine-readable line each (``PASS|MISS <spec> <timer> <dtype> <ratio>x >=
<target>x``): issue 14's (float32 input, CRC off) and issue 26's (float64 input, CRC off: every
scalar codec's encode, decode and decode_add at 0.33x copyto, a sparsifier's decode and decode_add
at 0.5x, dense QSGD at 0.2x); then the load average. The vector quantizers are left out unless
named with ``--only`` (``tools/bench_vq.py`` measures them against their codebook search).

Run: ``python tools/bench_kernels.py [--d 16777216] [--repeat 5] [--only natural --only dither]``.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numba
import numpy as np

from mpicomp.compressors import Compressor, available, make
from mpicomp.rng import RandomKey, random_u64

REFERENCE_MODULES = ("numpy_reference_sparse", "numpy_reference_quant")
EXTRA_SPECS = ("natural∘randk(k=0.01)", "natural∘topk(k=0.01)", "qsgd(s=1024)", "qsgd(s=4096)")
VECTOR_QUANTIZERS = ("stovoq", "hsq", "cross-polytope")  # tools/bench_vq.py measures them against their search
SPARSIFIERS = ("randk", "topk", "compose")  # compose: a codec applied to a sparsifier's values
CODEC_TIMERS = ("encode no-crc", "decode no-crc", "add no-crc")
# issue 14: (registry name, timer) -> the smallest rate / copyto rate, float32 input, CRC off
TARGETS_FLOAT32 = {
    ("natural", "encode no-crc"): 0.5,
    ("natural", "decode no-crc"): 0.5,
    ("dither", "encode no-crc"): 0.33,
    ("qsgd", "encode no-crc"): 0.25,
    ("identity", "encode no-crc"): 0.5,
}


def float64_target(compressor: Compressor, timer: str) -> float:
    """Issue 26's target for a scalar codec's rate / copyto, float64 input, CRC off: 0.33 for encode,
    decode and decode_add; 0.5 for a sparsifier's decode and decode_add; 0.2 for dense QSGD
    (s >= 2^10, whose stream codes almost every coordinate)."""
    if compressor.name == "qsgd" and compressor.s >= 2**10:
        return 0.2
    if compressor.name in SPARSIFIERS and timer != "encode no-crc":
        return 0.5
    return 0.33


def verdict(spec: str, timer: str, ratio: float, target: float, unit: str = "x") -> str:
    """One machine-readable summary line: ``PASS|MISS <spec> <timer> <ratio>x >= <target>x``."""
    return f"{'PASS' if ratio >= target else 'MISS'} {spec} {timer} {ratio:.2f}{unit} >= {target}{unit}"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=2**24, help="vector dimension (default 2**24)")
    parser.add_argument("--repeat", type=int, default=5, help="timed repeats, best kept (default 5)")
    parser.add_argument(
        "--numpy-repeat", type=int, default=2, help="timed repeats of the (slow) NumPy references (default 2)"
    )
    parser.add_argument("--no-numpy", action="store_true", help="skip the NumPy references")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="benchmark only specs whose registry name or spec is NAME (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the vector and the keys")
    parser.add_argument("--threads", type=int, default=1, help="numba threads for the kernels (default 1)")
    parser.add_argument(
        "--clock",
        choices=tuple(CLOCKS),
        default="wall",
        help="wall time, or the process's CPU time (steadier on a shared machine: time spent waiting for a core "
        "does not count; memory contention still does) (default wall)",
    )
    parser.add_argument(
        "--dtype", action="append", choices=("float32", "float64"), help="input dtype (repeatable; default both)"
    )
    return parser.parse_args()


def numpy_references() -> dict[str, tuple[Callable, Callable]]:
    """The merged ``NUMPY_REFERENCES`` dicts of the reference modules next to this script."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    merged: dict[str, tuple[Callable, Callable]] = {}
    for module in REFERENCE_MODULES:
        merged.update(importlib.import_module(module).NUMPY_REFERENCES)
    return merged


def benchmark_specs(only: list[str] | None, references: dict[str, tuple[Callable, Callable]]) -> list[str]:
    """Reference specs, then default specs of the other registered names, then EXTRA_SPECS; the
    vector quantizers only when named in ``only``."""
    specs = list(references)
    covered = set()
    for spec in specs:
        try:
            covered.add(make(spec).name)
        except ValueError:
            continue
    for name, cls in available().items():
        if name not in covered and (cls.__module__.startswith("mpicomp.") or (only is not None and name in only)):
            specs.append(name)  # plugins' codecs (e.g. the example plugin's) only when named
    specs.extend(EXTRA_SPECS)
    chosen = []
    for spec in specs:
        try:
            compressor = make(spec)
        except ValueError as err:
            print(f"skipping {spec}: {err}", file=sys.stderr)
            continue
        if only is None and compressor.name in VECTOR_QUANTIZERS:
            continue
        if only is None or spec in only or compressor.name in only or compressor.spec in only:
            chosen.append(spec)
    return chosen


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}  # cpu: this process's threads, not the others'


def elapsed(fn: Callable[[], object], clock: str = "wall") -> float:
    start = CLOCKS[clock]()
    fn()
    return CLOCKS[clock]() - start


def best_rates(d: int, timers: dict[str, Callable[[], object]], repeat: int, clock: str = "wall") -> dict[str, float]:
    """Elements per second of each timer, best of ``repeat`` interleaved rounds after one warm-up round."""
    for fn in timers.values():
        fn()
    best = dict.fromkeys(timers, np.inf)
    for _ in range(repeat):
        for name, fn in timers.items():
            best[name] = min(best[name], elapsed(fn, clock))
    return {name: d / seconds for name, seconds in best.items()}


@numba.njit(cache=True)
def fill_random_words(state: np.uint64, out: np.ndarray) -> None:
    """``out[i] = random_u64(state, i)``: the codecs' per-coordinate draw and nothing else."""
    for i in range(out.size):
        out[i] = random_u64(state, i)


def draw_line(d: int, repeat: int, clock: str) -> str:
    """The draw's rate and its ratio to a float32 copyto of d elements, timed in the same repeats."""
    source, target, words = np.ones(d, dtype=np.float32), np.empty(d, dtype=np.float32), np.empty(d, dtype=np.uint64)
    state = RandomKey(0, 1, 0, 0).state
    rates = best_rates(
        d, {"copyto": lambda: np.copyto(target, source), "draw": lambda: fill_random_words(state, words)}, repeat, clock
    )
    return (
        f"the draw alone (SplitMix64 words into uint64): {rates['draw'] / 1e9:.3f} Gelem/s, "
        f"{rates['draw'] / rates['copyto']:.2f}x float32 copyto"
    )


def codec_timers(compressor: Compressor, x: np.ndarray, key: RandomKey) -> dict[str, Callable[[], object]]:
    """encode / decode / decode_add timers into caller buffers, with and without the CRC-32 trailer."""
    timers: dict[str, Callable[[], object]] = {}
    vector = np.zeros(x.size)
    for crc in (True, False):
        codec = make(compressor.spec)
        codec.crc = crc
        capacity = codec.message_capacity(x.size)
        buffer = None if capacity is None else np.empty(capacity, dtype=np.uint8)
        message = bytes(codec.encode(x, key))
        suffix = "" if crc else " no-crc"
        timers["encode" + suffix] = lambda codec=codec, buffer=buffer: codec.encode(x, key, out=buffer)
        timers["decode" + suffix] = lambda codec=codec, message=message: codec.decode(message, x.size, key, out=vector)
        timers["add" + suffix] = lambda codec=codec, message=message: codec.decode_add(message, vector, key)
    return timers


def reference_timers(
    encode: Callable, decode: Callable, x: np.ndarray, key: RandomKey
) -> dict[str, Callable[[], object]]:
    """encode / decode timers of a NumPy reference."""
    scalars, payload = encode(x, key)
    return {"encode": lambda: encode(x, key), "decode": lambda: decode(scalars, payload, x.size, key)}


def main() -> None:
    args = parse_args()
    numba.set_num_threads(args.threads)
    references = numpy_references()
    specs = benchmark_specs(args.only, references)
    met: dict[tuple[str, str], list[float]] = {}
    summary: list[str] = []
    print(draw_line(args.d, args.repeat, args.clock))
    for dtype in args.dtype or ["float32", "float64"]:
        x = np.random.default_rng(args.seed).standard_normal(args.d).astype(dtype)
        copy_source = x.astype(np.float32)
        copy_target = np.empty_like(copy_source)
        key = RandomKey(args.seed, 1, 0, 0)
        print(
            f"\nd = {args.d} {dtype} input, best of {args.repeat}, {args.clock} clock, "
            f"numba threads = {numba.get_num_threads()}; "
            "rates in Gelem/s"
        )
        print(
            "x copyto = codec rate / float32 np.copyto rate in the same repeats; numpy x = codec / plain NumPy version"
        )
        header = (
            f"{'spec':26s} {'bits/el':>7s} {'copyto':>7s} | {'enc':>6s} {'x cp':>6s} {'no-crc':>6s} | "
            f"{'dec':>6s} {'x cp':>6s} {'no-crc':>6s} | {'add':>6s} {'x cp':>6s} | "
            f"{'np enc':>7s} {'np dec':>7s} {'x np enc':>8s} {'x np dec':>8s}"
        )
        print(header)
        print("-" * len(header))
        for spec in specs:
            compressor = make(spec)

            def copy(target=copy_target, source=copy_source):
                np.copyto(target, source)

            timers = {"copyto": copy, **codec_timers(compressor, x, key)}
            rates = best_rates(args.d, timers, args.repeat, args.clock)
            bits = 8 * len(compressor.encode(x, key)) / args.d
            ratio = {name: rates[name] / rates["copyto"] for name in rates}
            if dtype == "float32":
                for name, timer in TARGETS_FLOAT32:
                    if name == compressor.name:
                        met.setdefault((compressor.spec, timer), []).append(ratio[timer])
            elif compressor.name not in VECTOR_QUANTIZERS:
                for timer in CODEC_TIMERS:
                    target = float64_target(compressor, timer)
                    summary.append(verdict(compressor.spec, f"{timer} float64", ratio[timer], target))
            line = (
                f"{compressor.spec:26s} {bits:7.3f} {rates['copyto'] / 1e9:7.3f} | "
                f"{rates['encode'] / 1e9:6.3f} {ratio['encode']:6.2f} {ratio['encode no-crc']:6.2f} | "
                f"{rates['decode'] / 1e9:6.3f} {ratio['decode']:6.2f} {ratio['decode no-crc']:6.2f} | "
                f"{rates['add no-crc'] / 1e9:6.3f} {ratio['add no-crc']:6.2f} |"
            )
            reference = references.get(spec)
            if reference is not None and not args.no_numpy:
                numpy_rates = best_rates(args.d, reference_timers(*reference, x, key), args.numpy_repeat, args.clock)
                line += (
                    f" {numpy_rates['encode'] / 1e9:7.4f} {numpy_rates['decode'] / 1e9:7.4f}"
                    f" {rates['encode'] / numpy_rates['encode']:8.1f} {rates['decode'] / numpy_rates['decode']:8.1f}"
                )
            else:
                line += f" {'-':>7s} {'-':>7s} {'-':>8s} {'-':>8s}"
            print(line, flush=True)
    print("\nissue 14 targets (float32 input, CRC off, x copyto):")
    for (spec, timer), ratios in met.items():
        print(verdict(spec, f"{timer} float32", min(ratios), TARGETS_FLOAT32[(make(spec).name, timer)]))
    print(f"issue 26 targets (float64 input, CRC off, x copyto, {args.threads} thread(s)):")
    print("\n".join(summary))
    print("load average (1, 5, 15 min): " + ", ".join(f"{load:.2f}" for load in os.getloadavg()))


if __name__ == "__main__":
    main()
