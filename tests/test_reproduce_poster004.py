"""Poster 004's claims in ``mpicomp reproduce``: the measures they add compute what their docstrings
say, and the numbers declared in ``natural-speedup-table.toml`` are the poster's table formulas at the
claim's own d, q and s (a typo in a band or a formula value would make the verdict judge against the
wrong number). The claims' quick runs and verdicts: tests/test_reproduce.py (slow, every claim)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from mpicomp.compressors import make
from mpicomp.compressors.compose import Compose
from mpicomp.compressors.dither import Dithering
from mpicomp.compressors.sparse import RandK
from mpicomp.reproduce.claim import claim_files, load_claim
from mpicomp.reproduce.measures import per_round, reach_smoothed
from mpicomp.results import Results
from mpicomp.rng import root_seed
from mpicomp.runner import build_problem_from

TABLE = "natural-speedup-table"
POSTER_SPEEDUPS = {  # poster 004's table, Speedup Factor column
    "nat": (3.2, 3.6),
    "rk": (0.6, 6.0),
    "natrk": (1.0, 10.7),
    "dsta": (1.8, 15.9),
    "dnat": (4.1, 16.0),
}


def results_of(workers: int = 1, **metrics) -> Results:
    columns = {name: np.asarray(values, dtype=np.float64) for name, values in metrics.items()}
    config = {"data": {"workers": workers}}
    return Results(Path("x.h5"), config, {}, "finished", "", "", columns, {}, np.zeros(1), None)


def test_reach_smoothed_uses_the_trailing_mean_and_the_first_value():
    # 1 at round 1, then 0.2 at even and 0 at odd rounds: the raw value is 0 at round 3 already, the trailing
    # mean over 4 rows is (1 + 0.2 + 0 + 0.2) / 4 = 0.35 at round 4 and 0.1 from round 5 on (1 has left the window)
    rounds = np.arange(1, 21)
    values = np.where(rounds == 1, 1.0, np.where(rounds % 2 == 0, 0.2, 0.0))
    run = results_of(round=rounds, grad_norm_sq=values, modelled_time=rounds * 0.5)
    assert reach_smoothed(run, "grad_norm_sq", fraction=0.15, window=4) == 5
    assert reach_smoothed(run, "grad_norm_sq", fraction=0.15, window=4, x="modelled_time") == 2.5
    assert reach_smoothed(run, "grad_norm_sq", fraction=0.15, window=1) == 3  # window 1: the raw value
    assert reach_smoothed(run, "grad_norm_sq", fraction=0.41, window=4) == 3  # (1 + 0.2 + 0) / 3 = 0.4
    assert math.isnan(reach_smoothed(run, "grad_norm_sq", fraction=0.05, window=4))


def test_per_round_divides_a_cumulative_column_by_rounds_and_workers():
    rounds = np.arange(1, 11)
    run = results_of(workers=4, round=rounds, up_payload_bytes=rounds * 4 * 100, modelled_time=rounds * 2e-5)
    assert per_round(run, "up_payload_bytes", per_worker=True, scale=8.0) == 800  # 100 bytes a worker a round
    assert per_round(run, "modelled_time", scale=1e6) == pytest.approx(20.0)


def _table():
    claim = load_claim(next(path for path in claim_files() if path.stem == TABLE))
    return claim, {q.id: q for q in claim.quantities}


def test_the_speedup_table_declares_the_posters_formulas_at_its_own_d_q_and_s():
    claim, quantities = _table()
    config = claim.sweep("quick").points[0].config
    d = build_problem_from(config, root_seed(config.run["seed"])).d
    specs = {i: quantities[f"{i}_rounds"].runs["compressor.uplink"] for i in POSTER_SPEEDUPS}
    randk, composed, dsta, dnat = (make(specs[i]) for i in ("rk", "natrk", "dsta", "dnat"))
    assert isinstance(randk, RandK) and isinstance(composed, Compose) and isinstance(composed.inner, RandK)
    q = randk.count(d)
    assert composed.inner.count(d) == q
    s = 3  # D_nat^{2,s} and D_sta^{2,2^(s-1)}
    assert isinstance(dnat, Dithering) and isinstance(dsta, Dithering)
    assert (dnat.s, dnat.p, dsta.s, dsta.p) == (s, 2, 2 ** (s - 1), 2)
    r = min(1.0, math.sqrt(d) * 2 ** (1 - s)) * math.sqrt(d) * 2 ** (1 - s)  # p = 2: d^(1/min(p, 2)) = sqrt(d)
    bits = {
        "base": 32 * d,
        "nat": 9 * d,
        "rk": (33 + math.log2(d)) * q,
        "natrk": (10 + math.log2(d)) * q,
        "dsta": 31 + d * (2 + s),
        "dnat": 8 + d * (2 + math.log2(s)),
    }
    worst = {"nat": 9 / 8, "rk": d / q, "natrk": 9 * d / (8 * q), "dsta": 1 + r, "dnat": 81 / 64 + 9 / 8 * r}
    for i, value in bits.items():
        assert quantities[f"{i}_bits"].paper == pytest.approx(value, abs=0.1)
    for i, bound in worst.items():
        rule = quantities[f"{i}_iterations"].rule
        assert (rule.op, rule.than - rule.abs, rule.than + rule.abs) == (
            "~",
            pytest.approx(1),
            pytest.approx(bound, abs=1e-3),
        )
    for i, (low, high) in POSTER_SPEEDUPS.items():
        rule = quantities[f"{i}_speedup"].rule
        assert (rule.than - rule.abs, rule.than + rule.abs) == (pytest.approx(low), pytest.approx(high))
