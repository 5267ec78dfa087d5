"""Switch formats side by side: modelled time per round against n, and each format's aggregate error.

For every n in ``--workers`` (default 2, 4, 8, 16, 32) one round of every switch format runs through
the emulated switch (``LocalTransport``: the same packets, switch and byte counters as under MPI), on
n workers' vectors of ``--d`` standard normals scaled per worker by ``10^U(-1, 1)``:

* ``time``: the counted bytes of the round through ``NetworkModel(topology="switch")`` (line rate
  ``--bandwidth``, ``--latency``, ``--in-flight`` packets per worker), against a ring all-reduce of the
  float32 vector (``topology="ring"``: 2 (n - 1) steps of 4 d / n bytes). SwitchML's claim: its time
  per round does not grow with n, the ring's latency term does.
* ``error``: ``||S - sum_i x_i|| / ||sum_i x_i||`` against the float64 sum, per format: mpicomp's
  natural (C_nat's own variance: poster 004's natural compression), mpicomp's fixed point (float64),
  SwitchML's float32 block floating point, ATP's 10^6 fixed point (its fallback packets counted).

Example::

    python tools/switch_formats.py --d 262144
"""

from __future__ import annotations

import argparse

import numpy as np

from mpicomp.comm import LocalTransport, NetworkModel
from mpicomp.compressors import make
from mpicomp.methods.in_network import make_switch_sum
from mpicomp.rng import STREAM_UPLINK, RandomKey

FORMATS = {  # label -> (switch_format, uplink)
    "natural": ("mpicomp", "natural"),
    "fixed": ("mpicomp", "identity"),
    "switchml": ("switchml", "identity"),
    "atp": ("atp", "identity"),
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d", type=float, default=2**18, help="vector length (default 2^18)")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4, 8, 16, 32])
    parser.add_argument("--packet-values", type=int, default=64, choices=(64, 256), help="P (ATP: always 62)")
    parser.add_argument("--bandwidth", type=float, default=1.25e10, help="line rate, bytes/s (default 100 Gbit/s)")
    parser.add_argument("--latency", type=float, default=2e-6, help="one-way latency, s (default 2 us)")
    parser.add_argument("--in-flight", type=int, default=128, help="packets a worker keeps outstanding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.d = int(args.d)
    return args


def one_round(label: str, n: int, args: argparse.Namespace, vectors: list[np.ndarray]) -> dict[str, float]:
    switch_format, uplink = FORMATS[label]
    switch = make_switch_sum("switch", make(uplink), n, args.d, args.packet_values, switch_format)
    assert switch is not None
    transport = LocalTransport(n)
    keys = [RandomKey(args.seed, 0, w, STREAM_UPLINK) for w in range(n)]
    switch.total(vectors, keys, transport, evaluate_error=True)
    counts = transport.counter.end_round()
    model = NetworkModel(args.latency, args.bandwidth, "switch", args.in_flight)
    seconds = model.round_seconds(counts.up_bytes, counts.down_bytes, counts.switch_packets)
    return {
        "seconds": seconds,
        "bits_per_value": 8 * counts.up_bytes[0] / args.d,
        "error": switch.last_error,
        "fallback_bytes": counts.fallback_bytes,
    }


def main() -> None:
    args = parse_args()
    ring = NetworkModel(args.latency, args.bandwidth, "ring")
    print(
        f"d = {args.d}, P = {args.packet_values} (ATP 62), line rate {args.bandwidth * 8 / 1e9:g} Gbit/s, "
        f"latency {args.latency * 1e6:g} us, {args.in_flight} packets in flight"
    )
    header = f"{'n':>3s} {'ring ms':>9s} " + " ".join(f"{label + ' ms':>12s}" for label in FORMATS)
    errors = f"{'n':>3s} " + " ".join(f"{label + ' err':>13s}" for label in FORMATS) + f" {'atp fallback B':>15s}"
    times, errs, bits = [], [], {}
    for n in args.workers:
        rng = np.random.default_rng([args.seed, n])
        vectors = [rng.standard_normal(args.d) * 10.0 ** rng.uniform(-1, 1) for _ in range(n)]
        rows = {label: one_round(label, n, args, vectors) for label in FORMATS}
        ring_seconds = ring.round_seconds(np.full(n, 4 * args.d), 0)
        times.append(
            f"{n:3d} {1e3 * ring_seconds:9.3f} " + " ".join(f"{1e3 * r['seconds']:12.3f}" for r in rows.values())
        )
        errs.append(
            f"{n:3d} "
            + " ".join(f"{r['error']:13.3e}" for r in rows.values())
            + f" {rows['atp']['fallback_bytes']:15d}"
        )
        bits = {label: r["bits_per_value"] for label, r in rows.items()}
    print("\nmodelled time per round (switch: counted frames; ring: float32 all-reduce)")
    print(header, *times, sep="\n")
    print("\nrelative aggregate error ||S - sum x_i|| / ||sum x_i|| (float64 reference)")
    print(errors, *errs, sep="\n")
    print("\nbits per value a worker sends (frames included): " + ", ".join(f"{k} {v:.2f}" for k, v in bits.items()))


if __name__ == "__main__":
    main()
