"""``mpicomp reproduce``: every shipped declaration is valid, the measures and rules compute what
their docstrings say, one claim runs end to end (bundled data, seconds), and (slow) every claim's
quick mode reaches its verdict."""

from __future__ import annotations

import configparser
import dataclasses
import json
import math
import subprocess
import sys
import tomllib
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpicomp.cli import main
from mpicomp.config import load, validate
from mpicomp.reproduce.claim import ClaimError, Rule, claim_files, load_claim, load_claims, parse_claim
from mpicomp.reproduce.engine import (
    AGREES,
    DIFFERS,
    NOT_RUN,
    Outcome,
    capped_sweep,
    drop_outdated,
    judge,
    measure,
    missing_data,
    run_claim,
)
from mpicomp.reproduce.measures import MEASURES, final, log_slope, ratio, reach, settle, variance_times_smoothness
from mpicomp.reproduce.report import DOCS_BEGIN, DOCS_END, verdict_cell, write_docs
from mpicomp.results import Results, read_results
from mpicomp.sweep import toml_value

ROOT = Path(__file__).resolve().parents[1]
TINY = "diana-linear"  # the claim the default set runs end to end (bundled data, two short runs)
CLAIMS = [path.stem for path in claim_files()]


def reproduce(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``mpicomp reproduce ARGS`` in a process of its own (its runs are processes of their own anyway)."""
    return subprocess.run(
        [sys.executable, "-m", "mpicomp", "reproduce", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )


def reproduce_here(capsys, *args: str) -> tuple[int, str, str]:
    """``mpicomp reproduce ARGS`` in this process: exit status, stdout, stderr."""
    code = main(["reproduce", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def results_of(**metrics) -> Results:
    columns = {name: np.asarray(values, dtype=np.float64) for name, values in metrics.items()}
    return Results(Path("x.h5"), {}, {}, "finished", "", "", columns, {}, np.zeros(1), None)


@pytest.mark.parametrize("name", CLAIMS)
def test_every_declaration_has_paper_numbers_sources_and_valid_runs(name):
    claim = load_claim(claim_files()[CLAIMS.index(name)])
    assert claim.paper and claim.figure and claim.compares and claim.differences
    judged = [q for q in claim.quantities if q.rule is not None]
    assert judged, "a claim without a rule has no verdict"
    for quantity in claim.quantities:
        assert quantity.source.strip()
        if quantity.rule is not None:
            assert quantity.paper is not None
    for mode in ("quick", "full"):
        sweep = claim.sweep(mode)
        for point in [] if sweep is None else sweep.points:  # each point is what `mpicomp run --set ...` validates
            sets = [f"{key}={toml_value(value)}" for key, value in point.overrides.items()]
            assert load(None, sets) == point.config


def test_list_prints_one_line_per_claim_with_paper_and_figure(capsys):
    code, out, _ = reproduce_here(capsys, "--list")
    assert code == 0
    lines = out.splitlines()
    assert [line.split()[0] for line in lines] == CLAIMS
    for claim, line in zip(load_claims(), lines, strict=True):
        assert claim.paper in line and claim.figure in line and claim.compares in line


def test_an_unknown_claim_is_one_line_naming_the_known_ones(capsys):
    code, _, err = reproduce_here(capsys, "no-such-claim")
    assert code == 2
    assert err.startswith("mpicomp: reproduce: no claim 'no-such-claim'; known: ")
    assert TINY in err and len(err.strip().splitlines()) == 1


def test_count_and_an_array_index_beyond_the_runs(capsys, tmp_path):
    assert reproduce_here(capsys, TINY, "--count") == (0, "2\n", "")
    code, _, err = reproduce_here(capsys, TINY, "--array-index", "2", "--out", str(tmp_path))
    assert code == 2 and err == "mpicomp: reproduce: array index 2 is not a run; use 0-1\n"
    assert not list(tmp_path.iterdir())


BASE = {
    "paper": "p",
    "title": "t",
    "figure": "Figure 1",
    "compares": "c",
    "differences": "d",
    "runs": {"set": {"run.rounds": 5}, "grid": {"method.name": ["gd", "diana"]}},
    "quantity": [
        {"id": "a", "label": "A", "measure": "final", "metric": "loss", "runs": {"method.name": "gd"}, "source": "s"},
        {
            "id": "b",
            "label": "B",
            "measure": "ratio",
            "of": "a",
            "to": "a",
            "paper": 1,
            "source": "s",
            "rule": {"op": "~", "rel": 0.1},
        },
    ],
}


def _with(**changes):
    raw = json.loads(json.dumps(BASE))
    for key, value in changes.items():
        target, _, field = key.rpartition("__")
        table = raw["quantity"][int(target[1:])] if target else raw
        table[field] = value
    return raw


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"q0__measure": "median"}, "[[quantity]] 1 (a): unknown measure 'median'; known: final,"),
        ({"q0__metrc": "loss"}, "measure 'final' takes no 'metrc'; it takes metric, window"),
        (
            {"q0__runs": {"method.name": "ef21"}},
            "[[quantity]] a: runs {method.name = 'ef21'} selects no run in quick mode",
        ),
        ({"q1__of": "z"}, "'z' names no earlier quantity; earlier: a"),
        ({"q1__rule": {"op": "=="}}, "op '==' is not allowed; choose one of <, <=, >, >=, ~"),
        ({"q1__rule": {"op": "<", "rel": 0.1}}, "rel and abs are tolerances of op = '~', not of '<'"),
        (
            {"q1__paper": "about one"},
            "without than the rule compares with the paper's number, but paper is 'about one'",
        ),
        ({"q1__source": None}, "missing source"),
        (
            {"q1__rule": {"op": "~", "modes": ["long"]}},
            "modes must be a non-empty list of 'quick', 'full', got ['long']",
        ),
        ({"q1__rule": {"op": "~", "modes": ["full"]}}, "no quantity has a rule judged in quick mode"),
        ({"runs": {"grid": {"method.name": ["gd", "nope"]}}}, "method"),
        (
            {"quick": {"set": {"run.rounds": 0}}},
            "claim.toml [quick]: point 0 (method.name='gd'): [run] rounds: must be >= 1",
        ),
        ({"figure": ""}, "figure must be a non-empty string"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_a_bad_declaration_is_one_error_naming_the_key(changes, message):
    raw = _with(**changes)
    for quantity in raw["quantity"]:
        if quantity.get("source", "") is None:
            del quantity["source"]
    with pytest.raises(ClaimError) as error:
        parse_claim(raw, Path("claim.toml"))
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_the_base_declaration_of_the_error_tests_is_valid():
    claim = parse_claim(_with(), Path("claim.toml"))
    assert [q.id for q in claim.quantities] == ["a", "b"]
    assert claim.sweep("quick") is not None and len(claim.sweep("quick").points) == 2


def test_measures_compute_what_they_state():
    rounds = np.arange(0, 201, 10)
    run = results_of(round=rounds, suboptimality=10.0 ** (-rounds / 50), bits_up=rounds * 8, bits_down=rounds * 2)
    assert log_slope(run, "suboptimality", per=100) == pytest.approx(-2.0)
    assert log_slope(run, "suboptimality", start=0.5, per=10) == pytest.approx(-0.2)
    assert reach(run, "suboptimality", 1e-2) == 100  # 10^(-100/50)
    assert reach(run, "suboptimality", 1e-2, x="bits") == 1000
    assert math.isnan(reach(run, "suboptimality", 1e-9))
    assert final(run, "bits_up") == 1600
    assert final(run, "round", window=0.2) == pytest.approx(np.mean(rounds[-4:]))
    assert ratio({"a": 6.0, "b": 3.0}, of="a", to="b") == 2.0
    assert set(MEASURES) >= {
        "final",
        "lowest",
        "reach",
        "log-slope",
        "variance-times-smoothness",
        "distortion",
        "ratio",
    }


def test_variance_times_smoothness_of_draws_from_a_known_gaussian():
    """Draws N(0, 2.5/L) per coordinate from the stored results of a toy-Gaussian run: the measure gives 2.5 (the
    config as a results file stores it, unset keys null). 2,000 draws x 50 coordinates: relative standard error
    sqrt(2/100000) = 0.45%, so 2% is over 4 standard errors."""
    raw = {
        "problem": {"name": "gaussian", "dataset": "synthetic:d=50,points=200,spread=2,noise=1", "l2": 0.0},
        "data": {"workers": 20, "batch": 20},
        "method": {"name": "qlsd"},
        "run": {"optimum": False},
    }
    stored = json.loads(json.dumps(validate(raw).as_dict()))
    assert stored["problem"]["positive_class"] is None
    smoothness = 20 * 200 / 1.0  # N / noise^2
    draws = np.random.default_rng(3).normal(0.0, np.sqrt(2.5 / smoothness), (2000, 50))
    run = Results(Path("x.h5"), stored, {}, "finished", "", "", {}, {}, np.zeros(50), draws)
    assert variance_times_smoothness(run) == pytest.approx(2.5, rel=0.02)


def test_a_claim_without_runs_is_measured_and_its_computed_values_are_reused(monkeypatch):
    raw = {key: value for key, value in BASE.items() if key not in ("runs", "quantity")}
    raw["quantity"] = [
        {"id": "a", "label": "A", "measure": "distortion", "spec": "randk(k=2)", "samples": 10, "source": "s"},
        {
            "id": "b",
            "label": "B",
            "measure": "ratio",
            "of": "a",
            "to": "a",
            "paper": 1,
            "source": "s",
            "rule": {"op": "~"},
        },
    ]
    claim = parse_claim(raw, Path("claim.toml"))
    assert claim.sweep("quick") is None
    calls = []
    distortion = MEASURES["distortion"]
    fake = dataclasses.replace(distortion, function=lambda **arguments: calls.append(arguments) or 2.0)
    monkeypatch.setitem(MEASURES, "distortion", fake)
    cache: dict[str, float] = {}
    first = measure(claim, "quick", None, {}, cache)
    again = measure(claim, "quick", None, {}, cache)
    assert len(calls) == 1 and calls[0]["spec"] == "randk(k=2)" and len(cache) == 1
    assert (
        [(row.value, row.verdict) for row in again]
        == [(row.value, row.verdict) for row in first]
        == [
            (2.0, ""),
            (1.0, AGREES),
        ]
    )


def test_a_rule_of_the_full_mode_only_is_shown_but_not_judged_in_quick_mode():
    """``modes = ["full"]``: the quick report shows the value and the rule without a verdict, and the claim's
    verdict comes from the other rules; in full mode the rule decides."""
    raw = _with()
    raw["quantity"].append(dict(raw["quantity"][1], id="c", rule={"op": ">", "than": 5.0, "modes": ["full"]}))
    claim = parse_claim(raw, Path("claim.toml"))
    runs = {point.index: results_of(round=[0, 5], loss=[2.0, 1.0]) for point in claim.sweep("quick").points}
    quick = measure(claim, "quick", claim.sweep("quick"), runs)
    full = measure(claim, "full", claim.sweep("full"), runs)
    assert [(row.value, row.verdict) for row in quick] == [(1.0, ""), (1.0, AGREES), (1.0, "")]
    assert [(row.value, row.verdict) for row in full] == [(1.0, ""), (1.0, AGREES), (1.0, DIFFERS)]
    assert verdict_cell(quick[2]) == "— (full mode only: ours > 5)"


def test_posterior_predictive_is_the_model_average_of_the_stored_draws(tmp_path):
    """A tiny Bayesian network sampled by QLSD#: the measure averages the draws' softmax probabilities on the
    held-out split, then scores the average (accuracy, -log pbar(y), entropy of pbar)."""
    from mpicomp.reproduce.measures import _problem_of, posterior_predictive
    from mpicomp.testing import run_inprocess

    raw = {
        "problem": {"name": "mlp", "dataset": "sklearn:digits", "hidden": [8], "l2": 1e-3},
        "data": {"workers": 2, "batch": 20},
        "method": {"name": "qlsd", "variant": "sharp", "stepsize": 1e-4},
        "compressor": {"uplink": "qsgd(s=16)"},
        "run": {"rounds": 60, "burn_in": 20, "thin": 10, "log_every": 20, "optimum": False},
    }
    results = run_inprocess(raw, tmp_path / "bnn.h5")
    assert results.samples is not None and len(results.samples) == 4  # rounds 30, 40, 50, 60
    problem = _problem_of(results)
    probabilities, classes = problem.test_class_probabilities(results.samples[0])
    logits = problem.network.logits(results.samples[0], problem.test_features)
    softmax = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(probabilities, softmax / softmax.sum(axis=1, keepdims=True), rtol=1e-12)
    np.testing.assert_array_equal(probabilities.argmax(axis=1) == classes, problem.test_correct(results.samples[0]))
    mean = np.mean([problem.test_class_probabilities(draw)[0] for draw in results.samples], axis=0)
    rows = np.arange(len(classes))
    assert posterior_predictive(results, "accuracy") == np.mean(mean.argmax(axis=1) == classes)
    assert posterior_predictive(results, "nll") == pytest.approx(-np.mean(np.log(mean[rows, classes])), rel=1e-12)
    assert posterior_predictive(results, "entropy") == pytest.approx(-np.mean(np.sum(mean * np.log(mean), axis=1)))
    assert 0.5 < posterior_predictive(results, "accuracy") <= 1.0
    with pytest.raises(ValueError, match="part 'mse' is not one of accuracy, nll, entropy"):
        posterior_predictive(results, "mse")
    raw["data"]["test_fraction"] = 0.0
    with pytest.raises(ValueError, match=r"no held-out split \(set \[data\] test_fraction\)"):
        posterior_predictive(run_inprocess(raw, tmp_path / "all-train.h5"), "accuracy")


def test_softmax_class_probabilities_are_the_softmax_of_the_margins():
    """The softmax GLM's held-out probabilities: rows sum to 1, their argmax is ``test_correct``'s class;
    a binary logistic model gives none."""
    from mpicomp.config import validate
    from mpicomp.runner import build_problem_from

    def problem(name):
        raw = {"problem": {"name": name, "dataset": "sklearn:digits" if name == "softmax" else "sklearn:breast_cancer"}}
        return build_problem_from(validate(raw), 0)

    softmax = problem("softmax")
    x = np.random.default_rng(2).normal(size=softmax.d)
    probabilities, classes = softmax.test_class_probabilities(x)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_array_equal(probabilities.argmax(axis=1) == classes, softmax.test_correct(x))
    assert problem("logistic").test_class_probabilities(np.zeros(problem("logistic").d)) is None


def test_settle_is_the_first_round_within_the_residual_of_the_runs_own_lowest_value():
    """Paper 003's loss residual: the minimum is the run's own (here 1.0 at round 90), not zero."""
    rounds = np.arange(0, 100, 10)
    loss = 1.0 + 10.0 ** (-rounds / 10)
    run = results_of(round=rounds, loss=loss, uploads=rounds * 3)
    assert settle(run, "loss", 1e-6) == 60  # 1e-6 + 1e-9 <= residual from round 60 on
    assert settle(run, "loss", 1e-6, x="uploads") == 180
    assert settle(run, "loss", 0.0) == 90


def test_distortion_of_rand_k_matches_its_variance():
    """Rand-2 in d = 16 (unbiased, scaled by d/k): E||C(x) - x||^2 = (d/k - 1) E||x||^2 = 7 * 16 = 112 for one
    compression and 112 / K for the mean of K independent ones; 400 samples give a standard error of 4.4% (simulated), so
    15% is 3.4 standard errors."""
    one = MEASURES["distortion"].function(spec="randk(k=2)", d=16, workers=1, samples=400)
    four = MEASURES["distortion"].function(spec="randk(k=2)", d=16, workers=4, samples=400)
    assert one == pytest.approx(112, rel=0.15)
    assert four == pytest.approx(28, rel=0.15)


@pytest.mark.parametrize(
    ("rule", "value", "paper", "verdict", "reference"),
    [
        (Rule("<", than=-1.0), -7.0, None, AGREES, -1.0),
        (Rule("<", than=-1.0), -0.5, None, DIFFERS, -1.0),
        (Rule(">=", than="gd", times=20.0), 30.0, None, DIFFERS, 40.0),
        (Rule("<=", than="gd", times=0.5), 1.0, None, AGREES, 1.0),
        (Rule("~", rel=0.1), 6.5, 6.97, AGREES, 6.97),
        (Rule("~", rel=0.05), 6.5, 6.97, DIFFERS, 6.97),
        (Rule("~", abs=1.0), float("nan"), 6.97, DIFFERS, 6.97),
    ],
)
def test_rules_judge_against_the_paper_a_number_or_another_quantity(rule, value, paper, verdict, reference):
    assert judge(rule, value, paper, {"gd": 2.0}) == (verdict, pytest.approx(reference))


def test_a_claim_with_missing_data_is_not_run_and_says_so_with_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MPICOMP_DATA", str(tmp_path / "cache"))
    raw = _with(runs={"set": {"problem.dataset": "libsvm:a9a"}, "grid": {"method.name": ["gd", "diana"]}})
    claim = parse_claim(raw, Path("claim.toml"))
    hint = f"get it with: mpicomp data fetch a9a (cache: {tmp_path / 'cache'}, set MPICOMP_DATA to move it)"
    assert missing_data(claim.sweep("quick")).endswith(hint)
    outcome = run_claim(claim, tmp_path / "out", "quick", echo=lambda line: None)
    assert outcome.verdict == NOT_RUN and outcome.why.endswith(hint)
    report = (tmp_path / "out" / "claim" / "report.md").read_text()
    assert f"**Verdict (quick mode): not run: dataset 'a9a' is not in the cache; {hint}**" in report
    assert not (tmp_path / "out" / "claim" / "quick").exists()


def test_one_claim_end_to_end_report_figure_runs_then_skipped_when_run_again(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = reproduce_here(capsys, TINY, "--quick", "--out", str(out))
    assert code == 0, stdout + stderr
    folder = out / TINY
    outcome = json.loads((folder / "outcome.json").read_text())
    assert outcome["verdict"] == AGREES and outcome["mode"] == "quick"
    assert all(row["verdict"] == AGREES for row in outcome["rows"])
    report = (folder / "report.md").read_text()
    assert "| quantity | paper | ours | verdict |" in report and "## Known differences" in report
    assert (folder / "figure.png").stat().st_size > 0
    runs = sorted(p.name for p in (folder / "quick").glob("*.h5"))
    assert runs == ["name=diana.h5", "name=quantized-sgd.h5"]
    docs = tmp_path / "reproductions.md"
    stale = f"### {TINY}: stale\n\nstale table"
    docs.write_text(f"# Head\n\n{DOCS_BEGIN}\nold\n\n{stale}\n\n### zz-other: kept\n\nits table\n{DOCS_END}\n\nTail\n")
    code, stdout, _ = reproduce_here(capsys, TINY, "--quick", "--out", str(out), "--write-docs", str(docs))
    assert code == 0
    assert "2 of 2 points already done or running: skipped" in stdout
    assert json.loads((folder / "outcome.json").read_text())["rows"] == outcome["rows"]
    text = docs.read_text()
    assert "old" not in text and text.startswith("# Head\n\n") and text.endswith(f"{DOCS_END}\n\nTail\n")
    assert f"### {TINY}: " in text and "| quantity | paper | ours | verdict |" in text
    assert "stale" not in text, "the claim that ran replaces its section"
    assert text.index(f"### {TINY}: ") < text.index("### zz-other: kept\n\nits table\n\n"), "others stay, in name order"
    # a key added to mpicomp after a run (absent from its stored config, not set by the claim) changes nothing
    with h5py.File(folder / "quick" / "name=diana.h5", "r+") as f:
        stored = json.loads(f.attrs["config"])
        del stored["network"]["in_flight"]
        f.attrs["config"] = json.dumps(stored)
    said: list[str] = []
    drop_outdated(load_claim(claim_files()[CLAIMS.index(TINY)]).sweep("quick"), folder / "quick", said.append)
    assert said == []
    # the declaration changes (another length): its old runs are removed, to run again
    raw = tomllib.loads(claim_files()[CLAIMS.index(TINY)].read_text())
    raw["quick"]["set"]["run.rounds"] += 1
    changed = parse_claim(raw, claim_files()[CLAIMS.index(TINY)])
    drop_outdated(changed.sweep("quick"), folder / "quick", said.append)
    assert not list((folder / "quick").glob("*.h5")) and len(said) == 2
    assert said[0].endswith("ran with another config than the claim now declares: removed, runs again")


def test_a_claim_not_run_keeps_its_section_in_the_docs(tmp_path):
    """A claim whose data is missing here does not erase the table another machine wrote; a claim without
    a section gets one that says it was not run."""
    claim = parse_claim(_with(), Path("claim.toml"))
    not_run = Outcome(claim, "quick", verdict=NOT_RUN, why="dataset 'a9a' is not in the cache")
    docs = tmp_path / "reproductions.md"
    kept = "### claim: from a full run\n\nits full table"
    docs.write_text(f"{DOCS_BEGIN}\n\n{kept}\n{DOCS_END}\n")
    write_docs(docs, [not_run])
    assert kept in docs.read_text() and "not in the cache" not in docs.read_text()
    docs.write_text(f"{DOCS_BEGIN}\n{DOCS_END}\n")
    write_docs(docs, [not_run])
    assert "**Verdict (quick mode): not run: dataset 'a9a' is not in the cache**" in docs.read_text()


def test_max_rounds_shortens_the_runs_in_a_folder_of_their_own_and_the_report_says_so(tmp_path, capsys):
    out = tmp_path / "out"
    code, stdout, stderr = reproduce_here(capsys, TINY, "--quick", "--max-rounds", "20", "--out", str(out))
    assert code in (0, 1), stdout + stderr
    folder = out / TINY
    runs = sorted((folder / "quick-20-rounds").glob("*.h5"))
    assert len(runs) == 2 and not (folder / "quick").exists()
    assert all(read_results(path).metrics["round"][-1] == 20 for path in runs)
    report = (folder / "report.md").read_text()
    assert "**Verdict (quick mode, capped at 20 of the declared 200 rounds): " in report
    assert f"mpicomp reproduce {TINY} --quick --max-rounds 20 --out" in report
    assert json.loads((folder / "outcome.json").read_text())["rounds_capped"] == {"rounds": 20, "declared": 200}
    claim = load_claim(claim_files()[CLAIMS.index(TINY)])
    assert capped_sweep(claim, "quick", 200)[1] is None, "runs no longer than the cap are not shortened"


def test_the_docs_hold_the_generated_section():
    text = (ROOT / "docs" / "reproductions.md").read_text()
    assert DOCS_BEGIN in text and DOCS_END in text


def test_the_package_data_ships_every_declaration():
    """A non-editable install has the claims: setup.cfg's package_data covers every file of claims/."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    patterns = config["options.package_data"]["mpicomp.reproduce"].split()
    folder = ROOT / "mpicomp" / "reproduce"
    shipped = {path for pattern in patterns for path in folder.glob(pattern)}
    assert set(folder.glob("claims/*")) == shipped and len(shipped) == len(CLAIMS)


# The claims whose quick mode we measured to differ from the paper (each explains why in its declaration).
DIFFERS_IN_QUICK_MODE = {"ef21-ef14-a9a", "qlsd-bias"}


@pytest.mark.slow
@pytest.mark.mpi
@pytest.mark.parametrize("name", CLAIMS)
def test_every_claims_quick_mode_reaches_its_verdict(name, tmp_path):
    claim = load_claim(claim_files()[CLAIMS.index(name)])
    sweep = claim.sweep("quick")
    if sweep is not None and missing_data(sweep):
        pytest.skip(missing_data(sweep))
    done = reproduce(name, "--quick", "--out", str(tmp_path), "-n", "2", cwd=tmp_path)
    outcome = json.loads((tmp_path / name / "outcome.json").read_text())
    expected = DIFFERS if name in DIFFERS_IN_QUICK_MODE else AGREES
    assert outcome["verdict"] == expected, done.stdout + done.stderr
    assert done.returncode == (0 if expected == AGREES else 1)
