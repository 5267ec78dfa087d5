"""Comparing runs: ``mpicomp compare`` / ``mpicomp plot``, the tidy table and the plot tools' shared drawing.

Everything runs on one small sweep made here: gd, diana and ef21 with seeds 0 and 1, a gd run with
seed 2 killed by SIGKILL in round 25 (status running, rows up to its last flush), a sampler run and a
file of another format with only ``round`` and ``loss`` columns. Expected values are read from the
files with h5py, independently of the reader under test.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import shutil
import struct
import subprocess
import sys
from argparse import Namespace
from pathlib import Path

import h5py
import numpy as np
import pytest

import tests.methods_for_tests  # noqa: F401  (registers the test-sampler method)
from mpicomp.cli import main
from mpicomp.methods import OPTIMIZER
from mpicomp.record import COMMUNICATION_COLUMNS, KIND_COLUMNS, ROUND_COLUMNS
from mpicomp.results import (
    ResultsWriter,
    RunsError,
    Target,
    compare_runs,
    find_results,
    load_runs,
    read_results,
    tidy_table,
    to_dataframe,
)
from mpicomp.results.compare import STANDARD_COLUMNS, Spread, sort_rows, to_text
from mpicomp.results.plot import figure, run_labels
from tests.runs import run_inprocess

SEEDS = (0, 1)
METHODS = ("gd", "diana", "ef21")
KILL_ROUND = 25  # the killed run dies at the start of this round; flushed: rows of rounds 2..20
KILLED_WRITER = """
import json, os, signal, sys
from mpicomp.comm import LocalTransport
from mpicomp.config import validate
from mpicomp.methods import method_class
from mpicomp.runner import run

gd = method_class("gd")
play = gd.round

def round_or_die(self, k, link):
    if k + 1 == int(sys.argv[3]):
        os.kill(os.getpid(), signal.SIGKILL)
    play(self, k, link)

gd.round = round_or_die
config = validate(json.loads(sys.argv[2]))
run(config, sys.argv[1], progress=False, transport=LocalTransport(config.data["workers"]))
"""


def experiment(method: str, seed: int, rounds: int = 30) -> dict:
    return {
        "problem": {"name": "logistic", "dataset": "sklearn:breast_cancer", "l2": 0.1},
        "data": {"workers": 4, "batch": 16},
        "method": {"name": method, "stepsize": 0.5 if method != "test-sampler" else 0.01},
        "compressor": {"uplink": "topk(k=0.3)" if method == "ef21" else "natural"},
        "run": {"rounds": rounds, "seed": seed, "log_every": 2, "flush_every": 5},
    }


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sweep")
    for method in METHODS:
        for seed in SEEDS:
            assert run_inprocess(experiment(method, seed), root / f"{method}_s{seed}.h5").status == "finished"
    script = root / "killed_writer.py"
    script.write_text(KILLED_WRITER)
    killed = subprocess.run(
        [
            sys.executable,
            str(script),
            str(root / "killed" / "gd_s2.h5"),
            json.dumps(experiment("gd", 2)),
            str(KILL_ROUND),
        ],
        capture_output=True,
        check=False,
        timeout=300,
    )
    assert killed.returncode == -9, killed.stderr.decode()
    script.unlink()
    run_inprocess(experiment("test-sampler", 0, rounds=20), root / "sampler.h5")
    config = {"problem": {"name": "lsq", "dataset": "synthetic"}, "method": {"name": "gd"}}
    with ResultsWriter(
        root / "other" / "lsq.h5",
        config=config,
        metrics={"round": "int64", "loss": "float64"},
        worker_metrics={},
        n_workers=1,
        d=2,
        mpi_size=1,
    ) as writer:
        for r in range(1, 6):
            writer.log({"round": r, "loss": 1.0 / r})
        writer.finish("finished", "5 rounds done")
    return root


@pytest.fixture(scope="module")
def runs(sweep):
    return load_runs([str(sweep)])[0]


def by_name(runs, name: str):
    return next(r for r in runs if r.path.name == name)


def file_metrics(path: Path) -> dict[str, np.ndarray]:
    """The /metrics columns as h5py reads them (not through the reader under test)."""
    with h5py.File(path, "r", swmr=True) as f:
        return {name: f["metrics"][name][()] for name in f["metrics"]}


def first_reach(path: Path, metric: str, value: float, above: bool) -> tuple | None:
    """Round, bits up + down, modelled and wall time at the first row meeting the target, by a plain loop."""
    m = file_metrics(path)
    for i, v in enumerate(m[metric]):
        if (v >= value) if above else (v <= value):
            return (
                int(m["round"][i]),
                int(m["bits_up"][i] + m["bits_down"][i]),
                float(m["modelled_time"][i]),
                float(m["wall_time"][i]),
            )
    return None


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


# --- finding runs -------------------------------------------------------------------------------


def test_runs_are_found_in_directories_globs_and_files_once_each(sweep, tmp_path):
    every = find_results([str(sweep)])
    assert {p.name for p in every} == {
        "gd_s0.h5",
        "gd_s1.h5",
        "diana_s0.h5",
        "diana_s1.h5",
        "ef21_s0.h5",
        "ef21_s1.h5",
        "gd_s2.h5",
        "sampler.h5",
        "lsq.h5",
    }
    assert [p.name for p in find_results([str(sweep / "gd_s*.h5")])] == ["gd_s0.h5", "gd_s1.h5"]
    assert len(find_results([str(sweep / "gd_s0.h5"), str(sweep)])) == len(every)  # each file once
    assert [p.name for p in find_results([str(sweep / "**" / "gd_s2.h5")])] == ["gd_s2.h5"]
    for pattern, message in [
        (tmp_path / "nope.h5", "no such file or directory"),
        (tmp_path / "*.h5", "matches no file"),
        (tmp_path, "no .h5 files in this directory"),
    ]:
        with pytest.raises(RunsError, match=message):
            find_results([str(pattern)])


def test_a_file_that_is_not_a_results_file_is_skipped_with_a_note(sweep, tmp_path):
    junk = tmp_path / "junk.h5"
    with h5py.File(junk, "w") as f:
        f["x"] = [1, 2]
    runs, notes = load_runs([str(junk), str(sweep / "gd_s0.h5")])
    assert [r.path.name for r in runs] == ["gd_s0.h5"]
    assert notes == [
        f"skipped {junk}: {junk} is an HDF5 file but not an mpicomp results file (no format_version or /metrics)"
    ]
    with pytest.raises(RunsError, match="no readable results file"):
        load_runs([str(junk)])


# --- the comparison -----------------------------------------------------------------------------


def test_each_row_holds_the_files_last_values_and_the_differing_config_keys(runs):
    comparison = compare_runs(runs)
    assert {"method.name", "compressor.uplink", "run.seed"} <= set(comparison.columns)
    assert "problem.l2" in comparison.columns  # lsq.h5 has none
    real = compare_runs([r for r in runs if r.path.name != "lsq.h5"]).columns
    assert "problem.l2" not in real and "method.stepsize" in real  # the sampler's is 0.01
    for results, row in zip(runs, comparison.rows, strict=True):
        m = file_metrics(results.path)
        assert row["run"] == str(results.path) and row["status"] == results.status
        assert row["rounds"] == m["round"][-1]
        for name in (
            "loss",
            "suboptimality",
            "grad_norm_sq",
            "test_accuracy",
            "bits_up",
            "bits_down",
            "uploads",
            "modelled_time",
            "wall_time",
        ):
            if name in m:
                assert row[name] == m[name][-1], (results.path, name)
            else:
                assert row[name] is None, (results.path, name)
        config = results.config
        if "seed" in config.get("run", {}):
            assert (row["method.name"], row["run.seed"]) == (config["method"]["name"], config["run"]["seed"])


def test_time_and_bits_to_target_equal_an_independent_computation(runs):
    sweep_runs = [r for r in runs if "bits_up" in r.metrics and r.samples is None]
    loss = float(np.median([np.min(file_metrics(r.path)["loss"]) for r in sweep_runs]))
    accuracy = float(np.median([np.max(file_metrics(r.path)["test_accuracy"]) for r in sweep_runs]))
    targets = [Target.parse(f"loss={loss!r}"), Target.parse(f"accuracy={accuracy!r}")]
    assert (targets[1].metric, targets[1].above, targets[0].above) == ("test_accuracy", True, False)
    comparison = compare_runs(sweep_runs, targets)
    outcomes = set()
    for target, (metric, value, above) in zip(
        targets, [("loss", loss, False), ("test_accuracy", accuracy, True)], strict=True
    ):
        for results, row in zip(sweep_runs, comparison.rows, strict=True):
            expected = first_reach(results.path, metric, value, above)
            got = tuple(row[f"{q} to {target.label}"] for q in ("rounds", "bits", "modelled_time", "wall_time"))
            assert row[target.label] == ("not reached" if expected is None else "reached")
            assert got == ((None,) * 4 if expected is None else expected), (results.path, target.label)
            outcomes.add(expected is None)
    assert outcomes == {True, False}  # the median targets split the runs: both cases were checked


def test_a_target_no_run_reaches_says_so_in_every_format(sweep, runs, capsys):
    code, out, _ = cli(capsys, "compare", str(sweep / "gd_s0.h5"), str(sweep / "diana_s0.h5"), "--target", "loss=1e-9")
    assert code == 0
    lines = out.splitlines()
    for name in ("gd_s0.h5", "diana_s0.h5"):
        assert "not reached" in next(line for line in lines if name in line)
    code, out, _ = cli(capsys, "compare", str(sweep / "gd_s0.h5"), "--target", "loss=1e-9", "--json")
    row = json.loads(out)["rows"][0]
    assert row["loss<=1e-09"] == "not reached" and row["rounds to loss<=1e-09"] is None


def test_killed_sampler_and_other_format_runs_get_notes_not_exceptions(sweep, runs, capsys):
    comparison = compare_runs(runs, [Target.parse("suboptimality=1e-3")])
    rows = {Path(row["run"]).name: row for row in comparison.rows}
    killed = rows["gd_s2.h5"]
    killed_metrics = file_metrics(sweep / "killed" / "gd_s2.h5")
    assert killed["status"] == "running" and killed["rounds"] == 20 == killed_metrics["round"][-1]
    assert killed["loss"] == killed_metrics["loss"][-1]
    assert rows["sampler.h5"]["suboptimality"] is None and rows["sampler.h5"]["suboptimality<=0.001"] == "n/a"
    assert rows["sampler.h5"]["noise_norm"] == file_metrics(sweep / "sampler.h5")["noise_norm"][-1]  # a method's column
    assert rows["lsq.h5"]["bits_up"] is None and rows["lsq.h5"]["loss"] == 0.2
    notes = "\n".join(comparison.notes)
    assert f"{sweep / 'killed' / 'gd_s2.h5'}: status running: the run was killed or is still being written" in notes
    assert f"{sweep / 'sampler.h5'}: sampler: final values are at its last draw (20 draws in /samples)" in notes
    assert f"{sweep / 'sampler.h5'}: target suboptimality<=0.001: the run has no suboptimality column" in notes
    assert (
        f"{sweep / 'other' / 'lsq.h5'}: no suboptimality, grad_norm_sq, test_accuracy, bits_up, bits_down, uploads, "
        "modelled_time, wall_time column(s) in this file"
    ) in notes
    code, out, _ = cli(capsys, "compare", str(sweep), "--target", "suboptimality=1e-3")
    assert code == 0 and "notes:" in out and "status running" in out
    assert next(line for line in out.splitlines() if "lsq.h5" in line).count("n/a") >= 8


def test_a_run_without_rows_is_compared_and_plotted_with_notes(sweep, tmp_path, capsys):
    empty = tmp_path / "empty.h5"
    with ResultsWriter(
        empty,
        config={"method": {"name": "gd"}},
        metrics={"round": "int64", "loss": "float64"},
        worker_metrics={},
        n_workers=1,
        d=2,
        mpi_size=1,
    ) as writer:
        writer.finish("failed", "RuntimeError('before round 1')")
    comparison = compare_runs([read_results(empty)], [Target.parse("loss=0.3")])
    row = comparison.rows[0]
    assert (row["rounds"], row["loss"], row["loss<=0.3"]) == (0, None, "n/a")
    lacking = "suboptimality, grad_norm_sq, test_accuracy, bits_up, bits_down, uploads, modelled_time, wall_time"
    assert comparison.notes == [
        f"{empty}: failed: RuntimeError('before round 1')",
        f"{empty}: no row logged",
        f"{empty}: no {lacking} column(s) in this file (another method, problem or format): shown as n/a",
        f"{empty}: target loss<=0.3: no row logged",
    ]
    code, _, err = cli(
        capsys, "plot", str(empty), str(sweep / "gd_s0.h5"), "--y", "loss", "--out", str(tmp_path / "f.png")
    )
    assert code == 0 and f"{empty}: no finite loss value (no row logged): not drawn" in err


def test_text_table_shows_the_values_rounded_to_four_digits(sweep, capsys):
    code, out, _ = cli(capsys, "compare", str(sweep / "gd_s0.h5"), str(sweep / "ef21_s1.h5"))
    assert code == 0
    header, *lines = out.splitlines()[1:]
    assert header.split()[:3] == ["run", "name", "uplink"]  # second header line: the key under its section
    for name, line in zip(("gd_s0.h5", "ef21_s1.h5"), lines[:2], strict=True):
        m = file_metrics(sweep / name)
        assert name in line and f"{m['loss'][-1]:.4g}" in line.split() and str(m["bits_up"][-1]) in line.split()


def test_json_and_csv_hold_the_files_values_exactly(sweep, runs, capsys):
    code, out, _ = cli(capsys, "compare", str(sweep), "--json", "--target", "loss=0.3")
    assert code == 0
    document = json.loads(out)
    assert document["columns"][0] == "run" and any("sampler" in note for note in document["notes"])
    code, text, _ = cli(capsys, "compare", str(sweep), "--csv", "--target", "loss=0.3")
    assert code == 0
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(document["rows"]) == len(table) == len(runs)
    for row, line in zip(document["rows"], table, strict=True):
        m = file_metrics(Path(row["run"]))
        for name in ("loss", "grad_norm_sq", "bits_up", "modelled_time"):
            if name in m:
                assert row[name] == m[name][-1] and type(m[name][-1].item())(line[name]) == m[name][-1]
            else:
                assert row[name] is None and line[name] == ""


def test_seed_groups_give_mean_and_sample_std(sweep, runs, capsys):
    comparison = compare_runs(runs, group_seeds=True)
    assert "run.seed" not in comparison.columns and comparison.columns[:3] == ["run", "n", "seeds"]
    groups = {(row["method.name"], row["n"]): row for row in comparison.rows}
    assert set(groups) == {("gd", 3), ("diana", 2), ("ef21", 2), ("test-sampler", 1), ("gd", 1)}  # gd 1: lsq.h5
    gd = groups[("gd", 3)]
    assert gd["seeds"] == "0,1,2" and gd["status"] == "2 finished, 1 running"
    losses = [
        file_metrics(p)["loss"][-1] for p in (sweep / "gd_s0.h5", sweep / "gd_s1.h5", sweep / "killed" / "gd_s2.h5")
    ]
    assert gd["loss"] == Spread(float(np.mean(losses)), float(np.std(losses, ddof=1)))
    assert gd["rounds"].mean == pytest.approx((30 + 30 + 20) / 3)
    assert math.isnan(groups[("test-sampler", 1)]["loss"].std)
    code, out, _ = cli(capsys, "compare", str(sweep), "--group-seeds", "--json")
    assert code == 0
    row = next(r for r in json.loads(out)["rows"] if r["n"] == 3)
    assert (row["loss"], row["loss std"]) == (gd["loss"].mean, gd["loss"].std)
    assert row["run"] == [str(sweep / "gd_s0.h5"), str(sweep / "gd_s1.h5"), str(sweep / "killed" / "gd_s2.h5")]
    line = next(line for line in to_text(comparison).splitlines() if "gd_s0.h5 (+2)" in line)
    assert f"{gd['loss'].mean:.4g} ± {gd['loss'].std:.2g}" in line and "2 finished, 1 running" in line


def test_sorting_puts_runs_without_a_value_last_either_way(runs):
    for reverse in (False, True):
        comparison = compare_runs(runs)
        sort_rows(comparison, "suboptimality", reverse=reverse)
        values = [row["suboptimality"] for row in comparison.rows]
        present = [v for v in values if v is not None]
        assert present == sorted(present, reverse=reverse) and values[len(present) :] == [None, None]
    comparison = compare_runs(runs)
    sort_rows(comparison, "method.name")
    assert [row["method.name"] for row in comparison.rows][:2] == ["diana", "diana"]
    with pytest.raises(ValueError, match="cannot sort by 'los': no such column; the columns are: run, "):
        sort_rows(comparison, "los")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sort", "los"], "cannot sort by 'los'"),
        (["--target", "loss"], "expected METRIC=VALUE"),
        (["--target", "loss=abc"], "'abc' is not a number"),
        (["--target", "lss=0.3"], "target lss: no run has such a metric; the metrics are: round, loss"),
        (["--metric", "nope"], "metric nope: no run has such a metric"),
    ],
)
def test_bad_compare_input_exits_2_with_one_line(sweep, capsys, args, message):
    code, out, err = cli(capsys, "compare", str(sweep / "gd_s0.h5"), *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err and err.startswith("mpicomp: compare: ")


def test_missing_runs_exit_2(tmp_path, capsys):
    code, _, err = cli(capsys, "compare", str(tmp_path / "none.h5"))
    assert code == 2 and err == f"mpicomp: compare: {tmp_path / 'none.h5'}: no such file or directory\n"


def test_target_syntax():
    assert Target.parse("loss=0.3") == Target("loss", 0.3, above=False)
    assert Target.parse("accuracy=0.9") == Target("test_accuracy", 0.9, above=True)
    assert Target.parse("test_accuracy<=0.5").label == "test_accuracy<=0.5"
    assert Target.parse(" loss >= 2 ").label == "loss>=2"
    with pytest.raises(ValueError, match="must be finite"):
        Target.parse("loss=nan")


def test_the_standard_columns_are_those_every_optimizer_run_logs():
    """compare shows any other column as a method's own; this list must follow mpicomp/record.py."""
    assert STANDARD_COLUMNS == {*ROUND_COLUMNS, *KIND_COLUMNS[OPTIMIZER], *COMMUNICATION_COLUMNS}


# --- the tidy table -----------------------------------------------------------------------------


def test_tidy_table_has_a_row_per_logged_round_with_config_and_metric_columns(sweep, runs):
    table = tidy_table(runs)
    assert len({len(values) for values in table.values()}) == 1
    assert len(table["run"]) == sum(len(file_metrics(r.path)["round"]) for r in runs)
    for results in runs:
        rows = table["run"] == str(results.path)
        for name, values in file_metrics(results.path).items():
            np.testing.assert_array_equal(table[name][rows], values, err_msg=f"{results.path} {name}")
        assert set(table["status"][rows]) == {results.status}
        seed = results.config.get("run", {}).get("seed")
        assert list(table["run.seed"][rows]) == [seed] * int(rows.sum())
    lsq = table["run"] == str(sweep / "other" / "lsq.h5")
    assert table["bits_up"].dtype == np.float64 and np.isnan(table["bits_up"][lsq]).all()
    same = tidy_table([sweep / "gd_s0.h5", sweep / "diana_s0.h5"], config="differing")
    assert same["bits_up"].dtype == np.int64 and same["method.name"].dtype.kind == "U"
    assert [k for k in same if "." in k] == ["method.name"]
    with pytest.raises(ValueError, match="no run has the config key"):
        tidy_table(runs, config=["method.nam"])


def test_to_dataframe_uses_pandas_only_when_asked(monkeypatch):
    table = {"round": np.array([1, 2])}
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas fails
    with pytest.raises(ImportError, match="pip install pandas"):
        to_dataframe(table)
    made = []
    monkeypatch.setitem(sys.modules, "pandas", Namespace(DataFrame=lambda data: made.append(data) or "frame"))
    assert to_dataframe(table) == "frame" and made == [table]


def test_tables_take_files_folders_and_globs_alike(sweep, runs):
    whole = tidy_table(runs)
    np.testing.assert_array_equal(tidy_table(str(sweep))["run"], whole["run"])
    np.testing.assert_array_equal(tidy_table(sweep)["loss"], whole["loss"])
    gd = tidy_table([str(sweep / "gd_s*.h5"), sweep / "killed"])
    assert sorted(set(gd["run"])) == [
        str(sweep / "gd_s0.h5"),
        str(sweep / "gd_s1.h5"),
        str(sweep / "killed" / "gd_s2.h5"),
    ]
    with pytest.raises(RunsError, match="nowhere: no such file or directory"):
        tidy_table("nowhere")


def test_to_dataframe_of_runs_has_a_row_per_logged_round_and_section_key_columns(sweep, runs):
    pytest.importorskip("pandas")
    df = to_dataframe(str(sweep))
    assert len(df) == sum(r.n_rows for r in runs)
    gd = df[df["run"] == str(sweep / "gd_s1.h5")]
    np.testing.assert_array_equal(gd["loss"].to_numpy(), file_metrics(sweep / "gd_s1.h5")["loss"])
    assert set(gd["method.name"]) == {"gd"} and set(gd["run.seed"]) == {1}
    assert list(to_dataframe(runs, config="differing").columns[:3]) == ["run", "status", "problem.name"]


def test_export_writes_the_tidy_table_as_csv_or_parquet(sweep, runs, tmp_path, capsys, monkeypatch):
    whole = tidy_table(runs)
    assert main(["export", str(sweep), "--csv", str(tmp_path / "runs.csv")]) == 0
    assert capsys.readouterr().out == (
        f"wrote {tmp_path / 'runs.csv'}: {len(whole['run'])} rows of {len(runs)} runs, {len(whole)} columns\n"
    )
    with open(tmp_path / "runs.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert [row["run"] for row in rows] == list(whole["run"])
    assert [float(row["loss"]) for row in rows] == list(whole["loss"])  # full precision
    if importlib.util.find_spec("pyarrow") is not None:
        pandas = pytest.importorskip("pandas")
        assert main(["export", str(sweep), "--parquet", str(tmp_path / "runs.parquet")]) == 0
        frame = pandas.read_parquet(tmp_path / "runs.parquet")
        np.testing.assert_array_equal(frame["loss"].to_numpy(), whole["loss"])
        assert list(frame.columns) == list(whole)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import pyarrow fails
    assert main(["export", str(sweep), "--parquet", str(tmp_path / "other.parquet")]) == 2
    assert capsys.readouterr().err == (
        "mpicomp: export: --parquet needs pyarrow, which mpicomp does not install: pip install pyarrow (or use --csv)\n"
    )
    assert not (tmp_path / "other.parquet").exists()


# --- plots --------------------------------------------------------------------------------------


def test_plot_writes_png_and_pdf_and_notes_runs_it_cannot_draw(sweep, tmp_path, capsys):
    for suffix in (".png", ".pdf"):
        out = tmp_path / "figs" / f"sweep{suffix}"
        code, stdout, err = cli(
            capsys,
            "plot",
            str(sweep),
            "--y",
            "suboptimality",
            "--y",
            "test_accuracy",
            "--x",
            "rounds",
            "--x",
            "bits",
            "--out",
            str(out),
        )
        assert code == 0 and stdout == f"wrote {out} (9 runs)\n"
        assert f"{sweep / 'sampler.h5'}: no suboptimality column: not drawn against rounds" in err
        assert f"{sweep / 'other' / 'lsq.h5'}: no suboptimality column: not drawn against bits" in err
    png = (tmp_path / "figs" / "sweep.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    assert width > 1000 and height > 600  # two panels wide, two high
    assert (tmp_path / "figs" / "sweep.pdf").read_bytes().startswith(b"%PDF")


def test_plot_defaults_to_loss_in_a_png_named_after_the_input(sweep, tmp_path, capsys):
    run = tmp_path / "gd.h5"
    shutil.copy(sweep / "gd_s0.h5", run)
    code, stdout, _ = cli(capsys, "plot", str(run))
    assert code == 0 and stdout == f"wrote {tmp_path / 'gd.png'} (1 runs)\n"
    assert (tmp_path / "gd.png").read_bytes().startswith(b"\x89PNG")
    code, stdout, _ = cli(capsys, "plot", str(tmp_path))
    assert code == 0 and stdout == f"wrote {tmp_path.parent / tmp_path.name}.png (1 runs)\n"


def test_plotted_curves_are_the_files_columns(runs):
    curves = list(zip(run_labels(runs), runs, strict=True))
    fig, notes = figure(curves, ["suboptimality"], ["rounds", "bits"])
    by_rounds, by_bits = fig.axes[:2]
    assert by_bits.get_xlabel() == "bits sent (up + down) [kbit]" and by_rounds.get_yscale() == "log"
    drawn = {line.get_label(): line for line in by_bits.get_lines()}
    for label, results in curves:
        m = file_metrics(results.path)
        if "suboptimality" not in m:
            assert label not in drawn
            continue
        line = drawn[label]
        np.testing.assert_allclose(line.get_xdata() * 1e3, m["bits_up"] + m["bits_down"], rtol=1e-12)
        np.testing.assert_array_equal(line.get_ydata(), np.where(m["suboptimality"] > 0, m["suboptimality"], np.nan))
    assert len(drawn) == 7 and len(notes) == 4  # sampler and lsq.h5, against rounds and against bits
    lsq = next(curve for curve in curves if curve[1].path.name == "lsq.h5")
    assert figure([lsq], ["loss"], ["bits"])[1] == [f"{lsq[1].path}: no bits column: not drawn against bits"]


def test_labels_name_the_differing_keys_and_an_unfinished_status(sweep):
    runs = [read_results(sweep / name) for name in ("gd_s0.h5", "diana_s0.h5", "killed/gd_s2.h5")]
    assert run_labels(runs) == ["name=gd, seed=0", "name=diana, seed=0", "name=gd, seed=2 [running]"]
    assert run_labels(runs[:1]) == ["gd_s0.h5"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--y", "loss", "--out", "fig.txt"], "cannot tell the figure format; end the file name in .png, .pdf, .svg"),
        (["--y", "los", "--out", "fig.png"], "--y los: no run has such a metric"),
    ],
)
def test_bad_plot_input_exits_2_with_one_line(sweep, tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = cli(capsys, "plot", str(sweep / "gd_s0.h5"), *args)
    assert code == 2 and out == "" and err.count("\n") == 1 and message in err
    assert not list(tmp_path.iterdir())


def test_reproduce_draws_a_claims_figure_through_the_shared_plotting_code(sweep, tmp_path, monkeypatch):
    from mpicomp.reproduce.claim import load_claims
    from mpicomp.reproduce.engine import draw
    from mpicomp.results import plot

    claim = load_claims(["diana-linear"])[0]
    runs = {0: read_results(sweep / "diana_s0.h5"), 1: read_results(sweep / "gd_s0.h5")}
    drawn = []
    shared = plot.figure
    monkeypatch.setattr(
        plot, "figure", lambda curves, *args, **kwargs: drawn.append(curves) or shared(curves, *args, **kwargs)
    )
    path = draw(claim, claim.sweep("quick"), runs, tmp_path / "figure.png")
    assert path == tmp_path / "figure.png" and path.read_bytes().startswith(b"\x89PNG")
    assert [(label, results.path) for label, results in drawn[0]] == [
        ("name=diana", sweep / "diana_s0.h5"),
        ("name=quantized-sgd", sweep / "gd_s0.h5"),
    ]
