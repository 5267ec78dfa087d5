"""A latency-bandwidth network model that turns counted bytes into modelled seconds.

With latency ``a`` (seconds), bandwidth ``B`` (bytes per second), ``b_w`` the bytes worker
``w`` sends up in a round and ``b_down`` the bytes the master broadcasts, one round takes

    T = T_up + T_down,  T_down = a + b_down / B,
    T_up = a + (sum_w b_w) / B     ("serial": uploads share the master's link),
    T_up = a + (max_w b_w) / B     ("parallel": every worker has its own link to the master).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import numpy as np

UPLINK_MODES = ("serial", "parallel")


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


@dataclass(frozen=True)
class NetworkModel:
    """Modelled round time ``T = T_up + T_down`` (formulas in the module docstring).

    ``latency`` in seconds (>= 0), ``bandwidth`` in bytes per second (> 0), ``uplink`` one of
    ``"serial"`` or ``"parallel"``.
    """

    latency: float
    bandwidth: float
    uplink: str = "serial"

    def __post_init__(self) -> None:
        if not _is_number(self.latency) or not math.isfinite(self.latency) or self.latency < 0:
            raise ValueError(f"network latency must be a finite number of seconds >= 0, got {self.latency!r}")
        if not _is_number(self.bandwidth) or math.isnan(self.bandwidth) or self.bandwidth <= 0:
            raise ValueError(f"network bandwidth must be a positive number of bytes per second, got {self.bandwidth!r}")
        if self.uplink not in UPLINK_MODES:
            raise ValueError(f"network uplink mode must be one of {', '.join(UPLINK_MODES)}, got {self.uplink!r}")

    def uplink_seconds(self, up_bytes: np.ndarray) -> float:
        """``T_up = a + sum_w b_w / B`` (serial) or ``a + max_w b_w / B`` (parallel)."""
        sent = np.asarray(up_bytes)
        if sent.ndim != 1 or sent.size == 0 or (sent < 0).any():
            raise ValueError(f"up_bytes must be a non-empty 1-D array of byte counts >= 0, got {sent!r}")
        moved = sent.sum() if self.uplink == "serial" else sent.max()
        return self.latency + float(moved) / self.bandwidth

    def downlink_seconds(self, down_bytes: int) -> float:
        """``T_down = a + b_down / B``."""
        if down_bytes < 0:
            raise ValueError(f"down_bytes must be >= 0, got {down_bytes}")
        return self.latency + down_bytes / self.bandwidth

    def round_seconds(self, up_bytes: np.ndarray, down_bytes: int) -> float:
        """Modelled seconds of one round: ``T_up(up_bytes) + T_down(down_bytes)``."""
        return self.uplink_seconds(up_bytes) + self.downlink_seconds(down_bytes)
