"""Config validation and the command line's handling of bad input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mpicomp.cli import main
from mpicomp.config import ConfigError, load, parse_override, validate

BAD_CONFIGS = [
    ("[run]\nrounds = -5\n", "[run] rounds"),
    ("[run]\nrounds = 'ten'\n", "[run] rounds"),
    ("[run]\nroundz = 10\n", "unknown key 'roundz'"),
    ("[solver]\nx = 1\n", "unknown section [solver]"),
    ("[method]\nname = 'adam'\n", "[method] name"),
    ("[method]\nname = 'gd'\nstepsize = -0.1\n", "[method] stepsize"),
    ("[method]\nname = 'gd'\nmomentum = 0.9\n", "[method] unknown key 'momentum'"),
    ("[compressor]\nuplink = 'zip'\n", "[compressor] uplink"),
    ("[compressor]\ndownlink = 'identity(bits=3)'\n", "[compressor] downlink"),
    ("[data]\npartition = 'random'\n", "[data] partition"),
    ("[data]\nworkers = 0\n", "[data] workers"),
    ("[data]\ntest_fraction = 1.5\n", "[data] test_fraction"),
    ("[problem]\nname = 'svm'\n", "[problem] name"),
    ("[problem]\nregularizer = 'l1'\nl1 = 0.1\n", "[problem] regularizer"),
    ("[network]\nbandwidth = 0\n", "[network] bandwidth"),
    ("[network]\nuplink = 'ring'\n", "[network] uplink"),
    ("[run]\nseed = true\n", "[run] seed"),
    ("[run]\nmaster_share = 1.5\n", "[run] master_share: must be <= 1.0, got 1.5"),
    ("[run]\nmaster_share = -0.5\n", "[run] master_share: must be >= 0.0"),
    ("run = 3\n", "[run] must be a table"),
    ("[run\nrounds = 3\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS)
def test_bad_config_names_the_key(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(path)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS[:12])
def test_cli_bad_config_exits_2_without_traceback(tmp_path, text, expected):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "mpicomp", "run", str(path), "--out", str(tmp_path / "r.h5")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "r.h5").exists()


def test_defaults_fill_every_key():
    config = validate({})
    assert config.method == {"name": "gd", "stepsize": None}
    assert config.data["workers"] == 8 and config.compressor["uplink"] == "identity"


def test_integer_accepted_where_float_expected():
    assert validate({"problem": {"l2": 1}}).problem["l2"] == 1.0


def test_overrides_are_toml_values(tmp_path):
    config = load(None, ["run.rounds=7", 'compressor.uplink="identity(dtype=float32)"', "problem.intercept=false"])
    assert config.run["rounds"] == 7
    assert config.compressor["uplink"] == "identity(dtype=float32)"
    assert config.problem["intercept"] is False
    assert parse_override("problem.dataset=sklearn:digits") == ("problem", "dataset", "sklearn:digits")
    with pytest.raises(ConfigError, match="section.key=value"):
        parse_override("rounds=3")


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load(tmp_path / "nope.toml")


def test_cli_lists_compressors_and_methods(capsys):
    assert main(["compressors", "--d", "1000"]) == 0
    table = capsys.readouterr().out
    assert "identity" in table and "omega=0" in table
    assert main(["methods"]) == 0
    assert "quantized-sgd" in capsys.readouterr().out


def test_cli_help_mentions_commands():
    proc = subprocess.run(
        [sys.executable, "-m", "mpicomp", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0
    for command in ("run", "info", "compressors", "methods"):
        assert command in proc.stdout


EXAMPLE_CONFIGS = sorted(
    path
    for path in (Path(__file__).resolve().parents[1] / "jobscripts" / "configs").glob("*.toml")
    if not path.name.startswith("sweep-")  # sweep files: tests/test_sweep.py
)


@pytest.mark.parametrize("path", EXAMPLE_CONFIGS, ids=lambda p: p.name)
def test_example_configs_are_valid(path):
    load(path)
