"""Every bad input gets one clear line on stderr and exit status 2; nothing is left half-written.

Table-driven: each case builds its input in a temporary directory, runs the command line in this
process (``mpicomp.cli.main``) and checks the exit status and the first line of stderr.
"""

from __future__ import annotations

import gzip
import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mpicomp.cli import main
from mpicomp.progress import Progress

BASE = ["--set", "run.rounds=2", "--set", "run.optimum=false", "--no-progress", "-q"]


def svm_file(tmp: Path) -> Path:
    path = tmp / "data.svm"
    path.write_text("".join(f"{(-1) ** i} 1:{i} 2:{i % 3}\n" for i in range(40)))
    return path


def truncated_gz(tmp: Path) -> str:
    data = gzip.compress(svm_file(tmp).read_bytes())
    (tmp / "t.svm.gz").write_bytes(data[: len(data) // 2])
    return str(tmp / "t.svm.gz")


def not_gzip(tmp: Path) -> str:
    (tmp / "plain.svm.gz").write_bytes(svm_file(tmp).read_bytes())
    return str(tmp / "plain.svm.gz")


def empty_npz(tmp: Path) -> str:
    (tmp / "empty.npz").write_bytes(b"")
    return str(tmp / "empty.npz")


def npz(tmp: Path, name: str, X, y, **kw) -> str:
    np.savez(tmp / name, X=X, y=y, **kw)
    return str(tmp / name)


DATASET_CASES = {
    "truncated gz": (
        truncated_gz,
        r"mpicomp: \[problem\]/\[data\]: .*t\.svm\.gz: not a readable LIBSVM/svmlight file \(",
    ),
    "gz that is not gzip": (not_gzip, r"mpicomp: \[problem\]/\[data\]: .*plain\.svm\.gz: not a readable LIBSVM"),
    "empty npz": (empty_npz, r"mpicomp: \[problem\]/\[data\]: .*empty\.npz: not a readable \.npz archive"),
    "zero columns": (
        lambda tmp: npz(tmp, "wide.npz", np.zeros((10, 0)), np.arange(10) % 2),
        r"mpicomp: \[problem\]/\[data\]: .*wide\.npz: the train features have shape \(10, 0\)",
    ),
    "nan in data": (
        lambda tmp: npz(tmp, "nan.npz", np.where(np.eye(10, 3) > 0, np.nan, 1.0), np.arange(10) % 2),
        r"mpicomp: \[problem\]/\[data\]: .*nan\.npz: the (train|test) features contain NaN or Inf",
    ),
    "strings in npz": (
        lambda tmp: npz(tmp, "str.npz", np.array([["a", "b"]] * 10), np.arange(10) % 2),
        r"mpicomp: \[problem\]/\[data\]: .*str\.npz: X holds <U1 values; the features must be numbers",
    ),
    "python objects in npz": (
        lambda tmp: npz(tmp, "obj.npz", np.array([[1.0, 2.0]] * 4), np.array(["a", None, 1, 2.0], dtype=object)),
        r"mpicomp: \[problem\]/\[data\]: .*obj\.npz: not a readable \.npz archive .*holds Python objects",
    ),
}


@pytest.mark.parametrize("case", DATASET_CASES)
def test_bad_datasets(tmp_path, capsys, case):
    make, first_line = DATASET_CASES[case]
    dataset = make(tmp_path)
    code = main(["run", "--out", str(tmp_path / "r.h5"), "--set", f"problem.dataset='{dataset}'", *BASE])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err, err
    assert re.fullmatch(first_line + ".*", err[0]), err[0]
    assert not (tmp_path / "r.h5").exists()


SETTING_CASES = {
    "nan step": (
        ["method.stepsize=nan"],
        r"mpicomp: config error: \[method\] stepsize: must be a finite number, got nan",
    ),
    "inf step": (
        ["method.stepsize=inf"],
        r"mpicomp: config error: \[method\] stepsize: must be a finite number, got inf",
    ),
    "rounds beyond int64": (
        ["run.rounds=99999999999999999999"],
        r"mpicomp: config error: \[run\] rounds: 99999999999999999999 does not fit in a 64-bit integer",
    ),
    "nan divergence factor": (
        ["run.divergence_factor=nan"],
        r"mpicomp: config error: \[run\] divergence_factor: must be a finite number, got nan",
    ),
    "one prefix only": (
        ["method.name='vr-diana'", "data.batch=1", "method.p=2.0"],
        r"mpicomp: \[method\] p: the refresh probability must be in \(0, 1\], got 2\.0",
    ),
}


@pytest.mark.parametrize("case", SETTING_CASES)
def test_bad_settings(tmp_path, capsys, case):
    settings, first_line = SETTING_CASES[case]
    sets = [arg for setting in settings for arg in ("--set", setting)]
    code = main(["run", "--out", str(tmp_path / "r.h5"), *BASE, *sets])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err and re.fullmatch(first_line + ".*", err[0]), err


def test_config_path_that_is_a_directory_or_binary(tmp_path, capsys):
    assert main(["run", str(tmp_path), *BASE]) == 2
    assert capsys.readouterr().err.startswith(f"mpicomp: config error: config file '{tmp_path}' is a directory")
    binary = tmp_path / "cfg.toml"
    binary.write_bytes(bytes(range(256)))
    assert main(["run", str(binary), *BASE]) == 2
    assert "is not UTF-8 text (a binary file?)" in capsys.readouterr().err


def test_dataset_paths_in_a_config_file_are_relative_to_it(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    npz(folder, "d.npz", np.random.default_rng(0).standard_normal((40, 3)), np.arange(40) % 2)
    (folder / "run.toml").write_text('[problem]\ndataset = "d.npz"\n[run]\nrounds = 2\noptimum = false\n')
    monkeypatch.chdir(tmp_path)
    assert main(["run", "configs/run.toml", "--out", str(tmp_path / "r.h5"), "--no-progress", "-q"]) == 0
    assert capsys.readouterr().out.startswith("finished: 2 rounds done")


def test_oversized_batch_and_k_are_used_with_one_warning(tmp_path, capsys, recwarn):
    """breast_cancer on 8 workers: shards of about 57 samples; batch 500 and randk(k=100) > d = 31."""
    args = ["run", "--out", str(tmp_path / "r.h5"), "--set", "data.batch=500", "--set", "method.name='sgd'"]
    args += [
        "--set",
        "compressor.uplink='randk(k=100)'",
        "--set",
        "run.rounds=3",
        "--set",
        "run.optimum=false",
        "--no-progress",
    ]
    assert main(args) == 0
    batch_warnings = [line for line in capsys.readouterr().err.splitlines() if "exceeds the smallest shard" in line]
    assert len(batch_warnings) == 1 and "WARNING [data] batch = 500" in batch_warnings[0]
    k_warnings = [w for w in recwarn if "k = 100 exceeds d = 31" in str(w.message)]
    assert k_warnings, "randk(k) > d must warn"


OUT_CASES = {
    "a folder where no file can be created": (
        lambda tmp: Path("/proc/r.h5"),
        r"mpicomp: cannot create files in /proc \(",
    ),
    "parent is a file": (
        lambda tmp: tmp / "file.txt" / "r.h5",
        r"mpicomp: cannot create the folder of --out .*file\.txt/r\.h5: ",
    ),
    "out is a directory": (lambda tmp: tmp, r"mpicomp: --out .* is a directory; give a file path, e.g. .*run\.h5"),
}


@pytest.mark.parametrize("case", OUT_CASES)
def test_bad_out_paths(tmp_path, capsys, case):
    (tmp_path / "file.txt").write_text("x")
    make, first_line = OUT_CASES[case]
    assert main(["run", "--out", str(make(tmp_path)), "--overwrite", *BASE]) == 2
    assert re.fullmatch(first_line + ".*", capsys.readouterr().err.splitlines()[0])


def test_compressor_table_needs_a_positive_dimension(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["compressors", "--d", "0"])
    assert exit_info.value.code == 2
    assert "argument --d: must be >= 1, got 0" in capsys.readouterr().err


def test_info_into_a_closed_pipe_is_not_an_error(tmp_path):
    """`mpicomp info f.h5 | head -1`: the reader stops early; info must neither fail nor say "cannot read"."""
    out = tmp_path / "r.h5"
    assert main(["run", "--out", str(out), *BASE]) == 0
    done = subprocess.run(
        f"{sys.executable} -m mpicomp info {out} {out} {out} | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout.startswith("results: ") and done.stderr == "", done.stderr


@pytest.mark.parametrize("total", [1000, 2000])
def test_progress_in_a_log_file_is_a_few_plain_lines(caplog, total):
    """Not a terminal: one line at each 10% of the rounds exactly (and every 30 s), with the elapsed
    time and an estimate of the time left, not a carriage-return bar (2000: 30% is round 600, not 601)."""
    stream = io.StringIO()
    progress = Progress(total, enabled=True, stream=stream)
    logger = logging.getLogger("mpicomp")  # as the CLI sets it up: its own handler, no propagation
    propagate, logger.propagate = logger.propagate, False
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="mpicomp"):
            for _ in range(total):
                progress.update()
            progress.close()
    finally:
        logger.removeHandler(caplog.handler)
        logger.propagate = propagate
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("round ")]
    assert stream.getvalue() == "" and len(lines) == 10, lines
    assert [line.split()[1] for line in lines] == [f"{total * j // 10}/{total}" for j in range(1, 11)]
    assert all("elapsed " in line and " left" in line for line in lines), lines[0]
    quiet = io.StringIO()
    Progress(10, enabled=False, stream=quiet).update()
    assert quiet.getvalue() == ""


def test_verbose_logs_the_exchange_and_every_round(tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "r.h5"), *BASE[:-1], "-v"]) == 0
    err = capsys.readouterr().err
    assert "DEBUG exchange: per round, the uploads go to rank 0 (Gatherv)" in err
    rounds = [line for line in err.splitlines() if " DEBUG round " in line]
    assert len(rounds) == 2 and "uplink 8 uploads, 0 skipped" in rounds[0], err
