"""What a run records: the ``/metrics`` and ``/workers`` columns, by method kind, and their values.

Every run logs the communication columns (cumulative counted bytes, uploads, skips, times); an
optimizer adds loss, gradient norm and distance to the reference optimum, a sampler the loss and
gradient norm at its current draw; a method adds the :attr:`~mpicomp.methods.Method.columns` it
declares. Each column's meaning is listed in ``docs/results-format.md`` (a test checks that every
column is documented there).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .comm import RoundBytes
from .methods import OPTIMIZER, SAMPLER, Column, Method
from .problems.base import Problem

ROUND_COLUMNS = {"round": Column("int64", "rounds completed (1-based)")}
KIND_COLUMNS: dict[str, dict[str, Column]] = {
    OPTIMIZER: {
        "loss": Column("float64", "F(x) = (1/n) sum_i f_i(x) + R(x) on the training shards"),
        "grad_norm_sq": Column("float64", "||grad f(x)||^2 of the smooth part"),
        "suboptimality": Column("float64", "F(x) - F* (NaN without a reference optimum)"),
        "dist_to_opt": Column("float64", "||x - x*|| (NaN without a reference optimum)"),
        "test_accuracy": Column("float64", "accuracy on the held-out split (NaN without one)"),
    },
    SAMPLER: {
        "loss": Column("float64", "F(theta) at the current draw"),
        "grad_norm_sq": Column("float64", "||grad f(theta)||^2 at the current draw"),
        "test_accuracy": Column("float64", "held-out accuracy of the current draw (NaN without a test split)"),
        "samples_kept": Column("int64", "draws stored in /samples so far (after burn-in, thinned)"),
        "posterior_mean_mse": Column(
            "float64", "||mean of the kept draws - reference posterior mean||^2 / d (NaN without a reference)"
        ),
        "posterior_variance_mse": Column(
            "float64", "||variance of the kept draws - reference posterior variance||^2 / d (NaN without one)"
        ),
    },
}
COMMUNICATION_COLUMNS = {
    "bits_up": Column("int64", "8 x (payload + header + control) bytes sent up"),
    "bits_down": Column("int64", "8 x (payload + header + control) bytes sent down"),
    "up_payload_bytes": Column("int64", "uplink payload bytes"),
    "up_header_bytes": Column("int64", "uplink framing bytes (message headers, scalars, CRC; packet headers)"),
    "up_control_bytes": Column("int64", "uplink size prefixes"),
    "down_payload_bytes": Column("int64", "downlink payload bytes"),
    "down_header_bytes": Column("int64", "downlink framing bytes"),
    "down_control_bytes": Column("int64", "downlink size prefixes"),
    "uploads": Column("int64", "non-empty worker contributions (gathered uploads and switch packet streams)"),
    "skips": Column("int64", "skipped (zero-length) uploads"),
    "switch_overflow_packets": Column(
        "int64", "switch aggregate packets flagged as overflowed (ATP re-sends them to the master; 0 without a switch)"
    ),
    "switch_fallback_bytes": Column(
        "int64", "of the bytes up and down: ATP's overflowed packets re-sent as float32 to the master and back"
    ),
    "wall_time": Column("float64", "seconds spent in rounds on rank 0 (metric evaluation and logging excluded)"),
    "codec_time": Column("float64", "of wall_time: seconds rank 0 spent encoding and decoding (compression)"),
    "comm_time": Column(
        "float64", "of wall_time: seconds rank 0 spent in collectives, waiting for other ranks included"
    ),
    "modelled_time": Column("float64", "seconds the [network] model gives for the counted bytes"),
}
WORKER_COLUMNS = {
    "bytes_up": Column("int64", "bytes the worker sent up, size prefixes included"),
    "uploads": Column("int64", "the worker's non-empty contributions"),
    "skips": Column("int64", "the worker's skipped uploads"),
}


def metric_columns(method: type[Method] | Method) -> dict[str, Column]:
    """The ``/metrics`` columns of a run of ``method``, in logging order."""
    columns = {**ROUND_COLUMNS, **KIND_COLUMNS[method.kind], **COMMUNICATION_COLUMNS}
    clash = sorted(set(method.columns) & set(columns))
    if clash:
        raise ValueError(f"method {method.name!r} declares columns {clash} that every run already logs")
    return {**columns, **method.columns}


def dtypes(columns: Mapping[str, Column]) -> dict[str, str]:
    return {name: column.dtype for name, column in columns.items()}


def evaluate(
    problem: Problem, x: np.ndarray, kind: str, optimum: tuple[np.ndarray, float] | None
) -> dict[str, float] | None:
    """Collective: the kind's columns at ``x`` on the master (None on the other ranks): loss,
    ||grad f||^2, test accuracy, and for an optimizer F(x) - F* and ||x - x*|| (NaN where unknown).

    Every rank computes ``[f_w(x), grad f_w(x)]`` for its own workers, and the rows are added in one
    fixed binary tree over the worker ids (:meth:`Problem.loss_and_grad`), so the values do not
    depend on the rank layout. Likewise each worker scores its block of the held-out split and the master
    adds the counts (:meth:`Problem.test_accuracy`).
    """
    reduced = problem.loss_and_grad(x, everyone=False)
    acc = problem.test_accuracy(x)
    if reduced is None:
        return None
    loss, grad = reduced
    row = {"loss": loss, "grad_norm_sq": float(grad @ grad), "test_accuracy": np.nan if acc is None else acc}
    if kind == OPTIMIZER:
        row["suboptimality"] = row["dist_to_opt"] = np.nan
        if optimum is not None:
            x_star, f_star = optimum
            row["suboptimality"] = loss - f_star
            row["dist_to_opt"] = float(np.linalg.norm(x - x_star))
    return row


def communication(totals: RoundBytes) -> tuple[dict[str, int], dict[str, np.ndarray]]:
    """The cumulative byte columns and the per-worker columns from the master's counter totals."""
    row = {
        f"{name}_bytes": getattr(totals, name)
        for name in ("up_payload", "up_header", "up_control", "down_payload", "down_header", "down_control")
    }
    row.update(
        bits_up=8 * totals.up_total,
        bits_down=8 * totals.down_bytes,
        uploads=int(totals.uploads.sum()),
        skips=int(totals.skips.sum()),
        switch_overflow_packets=totals.overflow_packets,
        switch_fallback_bytes=totals.fallback_bytes,
    )
    return row, {"bytes_up": totals.up_bytes, "uploads": totals.uploads, "skips": totals.skips}


class PosteriorTracker:
    """Running mean and variance of the kept draws (Welford), and their errors against a reference.

    ``mean_mse = ||m_hat - m||^2 / d`` and ``variance_mse = ||v_hat - v||^2 / d`` with ``v_hat`` the
    unbiased sample variance per coordinate (NaN before two draws, or without a reference).
    """

    state_attrs = ("count", "mean", "squares")  # what a checkpoint saves

    def __init__(self, d: int, reference: tuple[np.ndarray, np.ndarray] | None) -> None:
        self.count = 0
        self.mean = np.zeros(d)
        self.squares = np.zeros(d)  # sum of squared deviations from the running mean
        self.reference = reference

    def add(self, draw: np.ndarray) -> None:
        self.count += 1
        delta = draw - self.mean
        self.mean += delta / self.count
        self.squares += delta * (draw - self.mean)

    def columns(self) -> dict[str, float]:
        row = {"samples_kept": self.count, "posterior_mean_mse": np.nan, "posterior_variance_mse": np.nan}
        if self.reference is not None and self.count > 0:
            mean, variance = self.reference
            row["posterior_mean_mse"] = float(np.mean((self.mean - mean) ** 2))
            if self.count > 1:
                row["posterior_variance_mse"] = float(np.mean((self.squares / (self.count - 1) - variance) ** 2))
        return row
