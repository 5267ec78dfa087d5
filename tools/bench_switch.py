"""In-network aggregation speed: host conversion rates, and a switch round against MPI baselines.

``python tools/bench_switch.py convert [--d 4194304]``: the hosts' float <-> integer conversion
of both switch encodings (:mod:`mpicomp.methods.in_network`) on one float64 vector of standard
normals, in elements/s and as a ratio to ``np.copyto`` of a float64 array of the same size timed in
the same repeats (interleaved, best of ``--repeat``). SwitchML's hosts spend their CPU exactly
here (FPISA, NSDI 2022); the target is >= 0.5x copyto for encode and decode (PASS / MISS).
The natural encode includes the C_nat draw itself (``natural_codes``, one SplitMix64 word per
coordinate), shown on its own as the ``prepare`` row.

* encode: ``prepare`` + ``block_exponents`` + ``to_integers`` (fixed point: float64 -> int32;
  natural: C_nat codes -> codes relative to the block exponent), the agreed exponents being the
  worker's own;
* prepare: that first part alone (natural: the C_nat codes; the others: the input as is), no verdict;
* packets: the integers into switch packets (``encode_packets``);
* decode: ``from_integers`` (int64 sums -> float64).

``mpiexec -n 4 python -m mpi4py tools/bench_switch.py round [--d 1000000]`` (one worker per
rank): seconds per round, from a barrier until the slowest rank is done, best and median of
``--repeat``, and the ratio to an MPI float32 ``Allreduce`` of the same vector:

* switch natural / fixed / switchml: ``SwitchSum.total`` through ``MPITransport`` (agreement,
  packets gathered to the switch on rank 0, its multicast);
* gather CODEC: the round the switch replaces, i.e. the same run with ``aggregation = "gather"``:
  the same uplink codec (natural; identity for fixed point; identity(dtype=float32) for SwitchML)
  ``gather``ed to the master, decoded and summed, the sum ``broadcast`` as float64 identity (the
  switch's runs require ``downlink = "identity"``), decoded everywhere;
* gather natural both ways: bi-directional C_nat (a different method: the master re-compresses the
  sum), shown for reference, without a verdict;
* allreduce float32: ``comm.Allreduce`` of the float32 vector (the software baseline's lower bound).

It ends with each switch round over the gather round of the same codec, measured in the same run:
the two run back to back in every repeat (in alternating order), and the verdict is the median of
the per-repeat ratios (the ratio of the medians is printed beside it). Pairing matters on shared,
oversubscribed cores, where the load drifts between repeats. PASS if it is at most 1.5 (MISS
otherwise).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from mpi4py import MPI

from mpicomp.comm import MPITransport
from mpicomp.comm.packets import OP_SUM, PacketSpec, encode_packets
from mpicomp.compressors import make
from mpicomp.compressors.switch_encoding import (
    FixedPointEncoding,
    NaturalEncoding,
    SwitchEncoding,
    SwitchMLEncoding,
)
from mpicomp.methods.in_network import SwitchSum
from mpicomp.rng import STREAM_DOWNLINK, STREAM_UPLINK, RandomKey

MASTER = -1
PACKET_VALUES = 256


CONVERT_TARGET = 0.5  # host conversion (encode, decode) at least this many copyto's


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("convert", "round"), help="host conversion rates, or one round under mpiexec")
    parser.add_argument("--d", type=float, help="vector dimension (default 2**22 for convert, 1e6 for round)")
    parser.add_argument("--repeat", type=int, default=10, help="timed repeats (default 10)")
    parser.add_argument("--workers", type=int, default=8, help="convert: n, which sets the headroom (default 8)")
    args = parser.parse_args()
    args.d = int(args.d or (2**22 if args.mode == "convert" else 1e6))
    if args.d < 1 or args.repeat < 1 or args.workers < 1:
        parser.error("--d, --repeat and --workers must be positive")
    return args


def encodings(n: int, d: int) -> dict[str, SwitchEncoding]:
    return {
        "fixed": FixedPointEncoding(n, d, PACKET_VALUES, float32=False),
        "natural": NaturalEncoding(n, d, PACKET_VALUES),
        "switchml": SwitchMLEncoding(n, d, PACKET_VALUES),
    }


def convert(args: argparse.Namespace) -> None:
    x = np.random.default_rng(0).standard_normal(args.d)
    key = RandomKey(0, 0, 0, STREAM_UPLINK)
    copy_target = np.empty_like(x)
    rows = []
    for name, switch in encodings(args.workers, args.d).items():
        spec = PacketSpec(OP_SUM, switch.lanes, 32, PACKET_VALUES)

        buffers = (
            None if switch.prepared_dtype is None else np.empty(args.d, dtype=switch.prepared_dtype),
            np.empty(args.d, dtype=switch.integer_dtype),
        )

        def encode(switch=switch, buffers=buffers) -> tuple[np.ndarray, np.ndarray]:
            """As a round does it: into buffers kept from round to round."""
            prepared = switch.prepare(x, key, buffers[0])
            agreed = switch.block_exponents(prepared)
            return switch.to_integers(prepared, agreed, key, out=buffers[1]), agreed

        integers, agreed = encode()
        steps: dict[str, Callable[[], object]] = {
            "encode": encode,
            "prepare": lambda switch=switch, buffers=buffers: switch.prepare(x, key, buffers[0]),
            "packets": lambda integers=integers, spec=spec: encode_packets(integers, spec, sender=0),
            "decode": lambda switch=switch, integers=integers, agreed=agreed: switch.from_integers(
                integers, agreed, out=copy_target
            ),
        }
        best = dict.fromkeys([*steps, "copyto"], np.inf)
        for _ in range(args.repeat):
            for step, run in [*steps.items(), ("copyto", lambda: np.copyto(copy_target, x))]:
                start = time.perf_counter()
                run()
                best[step] = min(best[step], time.perf_counter() - start)
        for step in steps:
            rate = args.d / best[step]
            rows.append((name, step, rate, best["copyto"] / best[step]))
    print(f"host conversion, d = {args.d} float64, n = {args.workers} (headroom), best of {args.repeat}")
    print(
        f"{'encoding':10s} {'step':8s} {'Melem/s':>10s} {'x copyto':>9s}   (target: encode, decode >= {CONVERT_TARGET})"
    )
    for name, step, rate, ratio in rows:
        print(f"{name:10s} {step:8s} {rate / 1e6:10.1f} {ratio:9.3f}")
    for name, step, _, ratio in rows:
        if step in ("encode", "decode"):
            verdict = "PASS" if ratio >= CONVERT_TARGET else "MISS"
            print(f"{verdict} switch host {name} {step} d={args.d}: {ratio:.2f}x copyto >= {CONVERT_TARGET}x")


class GatherRound:
    """A round through the master: uplink messages gathered, decoded and summed, the sum encoded with the
    downlink codec, broadcast and decoded everywhere."""

    def __init__(self, transport: MPITransport, x: np.ndarray, uplink: str, downlink: str) -> None:
        self.transport, self.x, self.up, self.down = transport, x, make(uplink), make(downlink)
        # fixed-size messages are announced, as gd's round does (Method.message_sizes): no size exchange
        self.up_size, self.down_size = self.up.message_capacity(x.size), self.down.message_capacity(x.size)

    def __call__(self, rnd: int) -> None:
        t, d = self.transport, self.x.size
        keys = {w: RandomKey(0, rnd, w, STREAM_UPLINK) for w in range(t.n_workers)}
        gathered = t.gather([self.up.encode(self.x, keys[w]) for w in t.local_workers], size=self.up_size)
        down_key = RandomKey(0, rnd, MASTER, STREAM_DOWNLINK)
        message = None
        if gathered is not None:
            total = np.zeros(d)
            for w, upload in enumerate(gathered):
                self.up.decode_add(upload, total, keys[w])
            message = self.down.encode(total, down_key)
        self.down.decode(t.broadcast(message, size=self.down_size), d, down_key)


# switch variant -> (its encoding's name in ``encodings``, the uplink codec of the same run with
# aggregation = "gather"; its downlink is identity, as the switch's runs require)
PAIRS = {
    "natural": ("natural", "natural"),
    "fixed": ("fixed", "identity"),
    "switchml": ("switchml", "identity(dtype=float32)"),
}
TARGET = 1.5  # a switch round takes at most this many gather rounds of the same codec


def switch_round(transport: MPITransport, x: np.ndarray, encoding: SwitchEncoding) -> Callable[[int], None]:
    switch = SwitchSum(encoding)
    rank = transport.rank
    return lambda rnd: switch.total([x], [RandomKey(0, rnd, rank, STREAM_UPLINK)], transport)


def timed(comm: MPI.Comm, run: Callable[[int], None], rnd: int) -> float:
    """Seconds from a barrier until the slowest rank has finished ``run(rnd)``."""
    comm.Barrier()
    start = MPI.Wtime()
    run(rnd)
    return comm.allreduce(MPI.Wtime() - start, op=MPI.MAX)


def round_benchmark(args: argparse.Namespace) -> None:
    comm = MPI.COMM_WORLD
    with MPITransport(comm.size) as transport:
        x = np.random.default_rng(comm.rank).standard_normal(args.d)
        x32, summed = x.astype(np.float32), np.empty(args.d, dtype=np.float32)
        switch_encodings = encodings(comm.size, args.d)
        variants: dict[str, Callable[[int], None]] = {}
        for name, (encoding, codec) in PAIRS.items():
            variants[f"switch {name}"] = switch_round(transport, x, switch_encodings[encoding])
            variants[f"gather {codec}"] = GatherRound(transport, x, codec, "identity")
        variants["gather natural both ways"] = GatherRound(transport, x, "natural", "natural")
        variants["allreduce float32"] = lambda rnd: comm.Allreduce(x32, summed, op=MPI.SUM)
        # a switch round and the gather round of its codec run back to back (in alternating order), so
        # that their ratio in one repeat sees the same load on the shared cores
        pairs = {f"switch {name}": (f"switch {name}", f"gather {codec}") for name, (_, codec) in PAIRS.items()}
        pairs.update({gather: () for _, gather in pairs.values()})
        seconds: dict[str, list[float]] = {name: [] for name in variants}
        for rnd in range(args.repeat + 1):
            names = list(variants)
            for name in names[rnd % len(names) :] + names[: rnd % len(names)]:
                for variant in pairs.get(name, (name,))[:: 1 if rnd % 2 else -1]:
                    elapsed = timed(comm, variants[variant], rnd)
                    if rnd > 0:  # the first repeat warms up (JIT, page faults)
                        seconds[variant].append(elapsed)
    if comm.rank == 0:
        report(args, comm.size, seconds)


def report(args: argparse.Namespace, ranks: int, seconds: dict[str, list[float]]) -> None:
    median = {name: statistics.median(values) for name, values in seconds.items()}
    base = median["allreduce float32"]
    print(f"one round, d = {args.d}, {ranks} ranks x 1 worker, {args.repeat} repeats (interleaved)")
    print(f"{'variant':32s} {'best ms':>9s} {'median ms':>10s} {'x allreduce':>12s}")
    for name, values in seconds.items():
        print(f"{name:32s} {1e3 * min(values):9.2f} {1e3 * median[name]:10.2f} {median[name] / base:12.2f}")
    print(f"switch round / gather round of the same uplink codec, each pair run back to back (target <= {TARGET})")
    print(f"  {'':44s} {'median of pair ratios':>21s} {'ratio of medians':>17s}")
    verdicts = []
    for name, (_, codec) in PAIRS.items():
        switch, gather = seconds[f"switch {name}"], seconds[f"gather {codec}"]
        paired = statistics.median(s / g for s, g in zip(switch, gather, strict=True))
        print(
            f"  {name:10s} vs gather {codec:24s} {paired:21.2f} {median[f'switch {name}'] / median[f'gather {codec}']:17.2f}"
        )
        verdicts.append(
            f"{'PASS' if paired <= TARGET else 'MISS'} switch round {name} d={args.d} ranks={ranks}: "
            f"switch/gather {paired:.2f} (target <= {TARGET}; median of pair ratios)"
        )
    print("\n".join(verdicts))


def main() -> None:
    args = parse_args()
    if args.mode == "convert":
        convert(args)
    else:
        round_benchmark(args)


if __name__ == "__main__":
    main()
