"""The Python a round runs around its kernels: mpicomp's round against the ideal bare program, warm
and after the last-level cache has been evicted, on one process that hosts the master and a worker.

Run as ``python tools/bench_python_cost.py`` (one process; ``--d`` small, so that the kernels take
about a microsecond and what is timed is the code around them). Both rounds are
``tools/bench_round.py``'s (``MpicompRound``, ``IdealRound``) on a one-rank transport: encode, gather,
the master's mean and encode, broadcast, step. Each repeat times each round twice: "cold", right after
copying a buffer of ``--evict-mib`` MiB (by default four times the L3 the OS reports), as a rank's
code runs after its own kernels and its neighbours' have streamed their vectors through a shared L3;
then "warm", at once again. Prints medians in microseconds and mpicomp's excess over the ideal program.

On a node with more ranks than the L3 holds vectors (``bench_round.py`` at d = 10^6 on 4 ranks), a
round's Python runs cold: its excess here, paid on every rank and every round, is what the framework's
checks, framing and byte counting cost there beyond the bare program's calls.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from bench_round import IdealRound, MpicompRound  # this folder is on sys.path when the script runs
from mpi4py import MPI

from mpicomp.comm import MPITransport
from mpicomp.compressors import make

L3_SIZE = Path("/sys/devices/system/cpu/cpu0/cache/index3/size")
FALLBACK_L3_MIB = 32


def l3_mib() -> int:
    """The L3 size the OS reports for CPU 0 in MiB (Linux sysfs, e.g. ``32768K``), else FALLBACK_L3_MIB."""
    try:
        text = L3_SIZE.read_text().strip().upper()
    except OSError:
        return FALLBACK_L3_MIB
    units = {"K": 1 / 1024, "M": 1, "G": 1024}
    if text[-1:] in units and text[:-1].isdigit():
        return max(1, round(int(text[:-1]) * units[text[-1]]))
    return FALLBACK_L3_MIB


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=int, default=1000, help="vector dimension (default 1000: kernels of about 1 us)")
    parser.add_argument(
        "--compressor",
        default="natural",
        choices=("identity", "natural"),
        help="codec of both links; the ideal program exists for these (default natural)",
    )
    parser.add_argument("--repeats", type=int, default=300, help="timed repeats of each round (default 300)")
    parser.add_argument(
        "--evict-mib",
        type=int,
        default=None,
        help="MiB copied before each cold round (default: four times the L3 the OS reports)",
    )
    args = parser.parse_args()
    if args.d < 1 or args.repeats < 1:
        parser.error("--d and --repeats must be positive")
    if args.evict_mib is None:
        args.evict_mib = 4 * l3_mib()
    return args


def main() -> None:
    args = parse_args()
    if MPI.COMM_WORLD.Get_size() != 1:
        raise SystemExit("bench_python_cost.py times one process: run it without mpiexec")
    transport = MPITransport(1)
    mpicomp_round = MpicompRound(transport, make(args.compressor), args.d, seed=0, checksum=False)
    ideal = IdealRound(MPI.COMM_WORLD, args.compressor, mpicomp_round.vectors[0], seed=0, polite=transport.polite)
    rounds: dict[str, Callable[[int], None]] = {"mpicomp round": mpicomp_round, "ideal": ideal}
    source = np.ones(args.evict_mib * 2**20 // 8)
    target = np.empty_like(source)
    cold: dict[str, list[float]] = {name: [] for name in rounds}
    warm: dict[str, list[float]] = {name: [] for name in rounds}
    for rnd in range(args.repeats + 10):  # the first 10 untimed: compilation and first touches
        for name, run in rounds.items():
            np.copyto(target, source)
            for times in (cold, warm):
                start = time.perf_counter()
                run(rnd)
                if rnd >= 10:
                    times[name].append(time.perf_counter() - start)
    print(
        f"one process, d = {args.d}, compressor {args.compressor}, {args.repeats} repeats; "
        f"cold: after copying {args.evict_mib} MiB (L3 reported: {l3_mib()} MiB)"
    )
    print(f"{'round':<16}{'warm us':>10}{'cold us':>10}")
    medians = {name: (statistics.median(warm[name]), statistics.median(cold[name])) for name in rounds}
    for name, (warm_median, cold_median) in medians.items():
        print(f"{name:<16}{1e6 * warm_median:>10.1f}{1e6 * cold_median:>10.1f}")
    (mw, mc), (iw, ic) = medians["mpicomp round"], medians["ideal"]
    print(
        f"mpicomp's Python a round beyond the ideal program's: {1e6 * (mw - iw):.1f} us warm, "
        f"{1e6 * (mc - ic):.1f} us cold ({(mc - ic) / (mw - iw):.1f}x)"
    )


if __name__ == "__main__":
    main()
