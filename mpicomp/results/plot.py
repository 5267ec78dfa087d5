"""Curves of runs against rounds, communicated bits, modelled or wall time, drawn with matplotlib.

Used by ``mpicomp plot`` and by the paper-reproduction tools in ``tools/``. matplotlib is imported
only when a figure is made (the ``plot`` and ``test`` extras install it). Figures are
``matplotlib.figure.Figure`` objects, never pyplot's, so nothing needs a display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .reader import Results
from .table import differing_keys, flat_config

X_AXES = {
    "rounds": "round",
    "bits": "bits sent (up + down)",
    "modelled_time": "modelled time",
    "wall_time": "wall time in rounds",
}
Y_LABELS = {
    "loss": r"training loss $F(x^k)$",
    "suboptimality": r"$F(x^k) - F^*$",
    "grad_norm_sq": r"$\|\nabla f(x^k)\|^2$",
    "dist_to_opt": r"$\|x^k - x^*\|$",
    "test_accuracy": "test accuracy",
}
LOG_Y = frozenset({"suboptimality", "grad_norm_sq", "dist_to_opt"})
LINEAR_Y = frozenset({"test_accuracy"})
LOG_Y_DECADES = 2  # "auto": any other metric goes on a log axis if its positive values span this many decades
UNITS = {
    "bits": ((1e12, "Tbit"), (1e9, "Gbit"), (1e6, "Mbit"), (1e3, "kbit"), (1.0, "bit")),
    "modelled_time": ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")),
    "wall_time": ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs")),
}
FORMATS = (".png", ".pdf", ".svg")
SCALES = ("auto", "linear", "log")
DPI = 120
LEGEND_INCHES_PER_CHAR, LEGEND_MARGIN_INCHES = 0.065, 0.6  # at fontsize 8: how many legend columns fit
FINAL_STATUSES_SHOWN = ("finished", "stopped")  # other statuses are added to the legend label


def x_values(results: Results, x: str) -> np.ndarray | None:
    """The run's x-axis values (``x`` a key of :data:`X_AXES`), None if the file lacks the columns."""
    m = results.metrics
    if x == "rounds":
        return m.get("round")
    if x == "bits":
        return m["bits_up"] + m["bits_down"] if "bits_up" in m and "bits_down" in m else None
    if x in X_AXES:
        return m.get(x)
    raise ValueError(f"x-axis {x!r}: expected one of {', '.join(X_AXES)}")


def run_labels(runs: Sequence[Results]) -> list[str]:
    """Legend labels from the config keys that differ between the runs (``name=diana, seed=1``;
    a key is shortened to its last part where that is unambiguous, keys a run lacks are left out);
    the file name where nothing differs; the status appended when the run neither finished nor stopped."""
    flats = [flat_config(r.config) for r in runs]
    keys = differing_keys(flats)
    short = {key: key.rsplit(".", 1)[-1] for key in keys}
    names = {key: short[key] if list(short.values()).count(short[key]) == 1 else key for key in keys}
    labels = [
        ", ".join(f"{names[key]}={flat[key]}" for key in keys if flat.get(key) is not None) or r.path.name
        for r, flat in zip(runs, flats, strict=True)
    ]
    labels = [
        label if labels.count(label) == 1 else f"{label} ({r.path.name})" for label, r in zip(labels, runs, strict=True)
    ]
    return [
        label if r.status in FINAL_STATUSES_SHOWN else f"{label} [{r.status}]"
        for label, r in zip(labels, runs, strict=True)
    ]


def _log_y(y: str, curves: Sequence[np.ndarray]) -> bool:
    if y in LOG_Y or y in LINEAR_Y:
        return y in LOG_Y
    values = np.concatenate([c[np.isfinite(c)] for c in curves]) if curves else np.empty(0)
    return bool(values.size) and values.min() > 0 and np.log10(values.max() / values.min()) >= LOG_Y_DECADES


def _unit(x: str, largest: float) -> tuple[float, str]:
    for scale, unit in UNITS.get(x, ()):
        if largest >= scale:
            return scale, unit
    return UNITS[x][-1] if x in UNITS else (1.0, "")


def draw(
    ax: Any,
    curves: Sequence[tuple[str, Results]],
    y: str,
    x: str = "rounds",
    *,
    yscale: str = "auto",
    xscale: str = "linear",
    legend: bool = True,
) -> list[str]:
    """Draw metric ``y`` against ``x`` for every ``(label, results)`` on the matplotlib axes ``ax``;
    returns a note for each run that has nothing to draw. With a log y axis (``yscale="log"``, or
    ``"auto"`` for suboptimality, gradient norm, distance to x* and metrics spanning two decades),
    values <= 0 are left out (F - F* rounds to <= 0 at the optimum). ``legend=False``: no legend
    on the axes (:func:`figure` draws one for all panels)."""
    if yscale not in SCALES:
        raise ValueError(f"yscale {yscale!r}: expected one of {', '.join(SCALES)}")
    notes, series = [], []
    for label, results in curves:
        xs, ys = x_values(results, x), results.metrics.get(y)
        if ys is None or xs is None:
            notes.append(f"{results.path}: no {y if ys is None else x} column: not drawn against {x}")
        elif not np.isfinite(ys).any():
            notes.append(
                f"{results.path}: no finite {y} value" + (" (no row logged)" if ys.size == 0 else "") + ": not drawn"
            )
        else:
            series.append((label, xs.astype(np.float64), ys.astype(np.float64)))
    log = _log_y(y, [ys for _, _, ys in series]) if yscale == "auto" else yscale == "log"
    scale, unit = _unit(x, max((float(np.nanmax(xs)) for _, xs, _ in series if xs.size), default=0.0))
    for label, xs, ys in series:
        shown = np.where(ys > 0, ys, np.nan) if log else ys
        ax.plot(xs / scale, shown, label=label, lw=1.2, marker="o" if xs.size == 1 else None)
    ax.set_yscale("log" if log else "linear")
    ax.set_xscale(xscale)
    ax.set_xlabel(X_AXES[x] + (f" [{unit}]" if unit else ""))
    ax.set_ylabel(Y_LABELS.get(y, y))
    ax.grid(True, which="both", alpha=0.3)
    if series and legend:
        ax.legend(fontsize=8)
    return notes


def figure(
    curves: Sequence[tuple[str, Results]],
    ys: Sequence[str],
    xs: Sequence[str] = ("rounds",),
    *,
    yscale: str = "auto",
    xscale: str = "linear",
    title: str | None = None,
) -> tuple[Any, list[str]]:
    """A figure with one panel per (y, x) pair, a row per y metric and a column per x-axis, and one
    legend below them; returns it and the notes of :func:`draw` (each once)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "plotting needs matplotlib: pip install 'mpicomp[plot]' (or pip install matplotlib)"
        ) from None
    fig = Figure(figsize=(5.2 * len(xs), 3.9 * len(ys)), layout="constrained")
    axes = fig.subplots(len(ys), len(xs), squeeze=False)
    notes: list[str] = []
    for row, y in enumerate(ys):
        for col, x in enumerate(xs):
            notes += draw(axes[row][col], curves, y, x, yscale=yscale, xscale=xscale, legend=False)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        per_column = LEGEND_INCHES_PER_CHAR * max(map(len, handles)) + LEGEND_MARGIN_INCHES
        ncols = max(1, min(len(handles), int(fig.get_figwidth() // per_column)))
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncols=ncols, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, list(dict.fromkeys(notes))


def check_output(path: str | os.PathLike) -> Path:
    """``path`` if its suffix is a format :func:`save` writes, else a ``ValueError`` saying which are."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(f"{path}: cannot tell the figure format; end the file name in {', '.join(FORMATS)}")
    return path


def save(fig: Any, path: str | os.PathLike) -> Path:
    """Write the figure (PNG, PDF or SVG by the suffix), creating the folder; returns the path."""
    path = check_output(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    return path
