"""Communication: transports that move messages, byte accounting, and the network time model."""

from .accounting import SIZE_PREFIX_BYTES, ByteCounter, RoundBytes, split_bytes
from .base import Transport, balanced_master_share, layout_summary, worker_range
from .local import LocalTransport
from .mpi import (
    LauncherMismatch,
    MPITransport,
    check_launcher_size,
    launcher_size,
    make_transport,
)
from .network import TOPOLOGIES, NetworkModel
from .packets import AggregationOverflowError, PacketSpec

__all__ = [
    "SIZE_PREFIX_BYTES",
    "TOPOLOGIES",
    "AggregationOverflowError",
    "ByteCounter",
    "LauncherMismatch",
    "LocalTransport",
    "MPITransport",
    "NetworkModel",
    "PacketSpec",
    "RoundBytes",
    "Transport",
    "balanced_master_share",
    "check_launcher_size",
    "launcher_size",
    "layout_summary",
    "make_transport",
    "split_bytes",
    "worker_range",
]
