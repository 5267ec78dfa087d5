"""A latency-bandwidth network model that turns counted bytes into modelled seconds per round.

With latency ``a`` (seconds), bandwidth ``B`` (bytes per second per link), n workers, ``b_w``
the bytes worker ``w`` sends up in a round and ``b_down`` the bytes sent down (the master's
broadcast, or the switch's multicast), one round takes, by topology:

    "serial"    parameter server, the uploads share the master's link:
                T = a + (sum_w b_w) / B  +  a + b_down / B
    "parallel"  parameter server, every worker has its own link to the master:
                T = a + (max_w b_w) / B  +  a + b_down / B
    "switch"    every worker's link to the switch works in parallel at the line rate B, the switch
                multicasts each aggregate packet as soon as its last contribution arrives, and a worker
                keeps at most s = ``in_flight`` packets outstanding (SwitchML's pool of slots; a slot is
                free again when its aggregate returns, one round trip 2a later). With m packets per
                worker in the round (its switch exchanges together):
                T = 2a + max( max(max_w b_w, b_down) / B , (ceil(m / s) - 1) 2a )
                (bandwidth-bound, or window-bound at s packets per round trip; one round trip of
                pipeline fill; SwitchML carries the exponent agreement of the next packet in the
                current one, so the exchanges overlap). A round with no switch packets (m = 0) uses
                the parallel formula.
    "ring"      ring all-reduce of what each worker contributes (its upload, e.g. the
                uncompressed vector): 2(n-1) steps, each moving 1/n of it on every link,
                T = 2 (n - 1) a + (2 (n - 1) / n) (max_w b_w) / B; nothing is sent down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np

TOPOLOGIES = ("serial", "parallel", "switch", "ring")


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class NetworkModel:
    """Modelled round time ``T = T_up + T_down`` (formulas in the module docstring).

    ``latency`` in seconds (>= 0), ``bandwidth`` in bytes per second (> 0), ``topology`` one of
    :data:`TOPOLOGIES`.
    """

    latency: float
    bandwidth: float
    topology: str = "serial"
    in_flight: int = 128  # switch: packets a worker keeps outstanding (SwitchML's pool of slots)

    def __post_init__(self) -> None:
        if not _is_number(self.latency) or not math.isfinite(self.latency) or self.latency < 0:
            raise ValueError(f"network latency must be a finite number of seconds >= 0, got {self.latency!r}")
        if not _is_number(self.bandwidth) or math.isnan(self.bandwidth) or self.bandwidth <= 0:
            raise ValueError(f"network bandwidth must be a positive number of bytes per second, got {self.bandwidth!r}")
        if isinstance(self.in_flight, bool) or not isinstance(self.in_flight, int) or self.in_flight < 1:
            raise ValueError(f"network in_flight must be a positive number of packets, got {self.in_flight!r}")
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"network topology must be one of {', '.join(TOPOLOGIES)}, got {self.topology!r}")

    def uplink_seconds(self, up_bytes: np.ndarray) -> float:
        """The upward (or, for a ring, the whole all-reduce) part of a round (module docstring)."""
        sent = np.asarray(up_bytes)
        if sent.ndim != 1 or sent.size == 0 or (sent < 0).any():
            raise ValueError(f"up_bytes must be a non-empty 1-D array of byte counts >= 0, got {sent!r}")
        if self.topology == "ring":
            steps = 2 * (sent.size - 1)
            return steps * self.latency + steps / sent.size * float(sent.max()) / self.bandwidth
        moved = sent.sum() if self.topology == "serial" else sent.max()
        return self.latency + float(moved) / self.bandwidth

    def downlink_seconds(self, down_bytes: int) -> float:
        """``T_down = a + b_down / B`` (0 for a ring, whose all-reduce leaves the result everywhere)."""
        if down_bytes < 0:
            raise ValueError(f"down_bytes must be >= 0, got {down_bytes}")
        if self.topology == "ring":
            return 0.0
        return self.latency + down_bytes / self.bandwidth

    def round_seconds(self, up_bytes: np.ndarray, down_bytes: int, packets: int = 0) -> float:
        """Modelled seconds of one round: ``T_up(up_bytes) + T_down(down_bytes)``, or for a switch round
        (``packets`` > 0 per worker) the pipelined formula of the module docstring."""
        if self.topology != "switch" or packets <= 0:
            return self.uplink_seconds(up_bytes) + self.downlink_seconds(down_bytes)
        sent = np.asarray(up_bytes)
        if sent.ndim != 1 or sent.size == 0 or (sent < 0).any() or down_bytes < 0:
            raise ValueError(f"up_bytes must be a non-empty 1-D array of byte counts >= 0, got {sent!r}")
        round_trip = 2 * self.latency
        windows = -(-packets // self.in_flight)
        return round_trip + max(max(float(sent.max()), down_bytes) / self.bandwidth, (windows - 1) * round_trip)
