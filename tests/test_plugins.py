"""Plugins: entry points, ``module:Class`` specs, outside codecs on the wire, errors in one line.

The example plugin (examples/plugin/src) is imported from the source tree, and entry points are
replaced by a fixed list, so the tests do not depend on what is installed.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint
from pathlib import Path

import numpy as np
import pytest

import mpicomp.compressors.base as compressor_base
import mpicomp.plugins
from mpicomp.cli import main
from mpicomp.compressors import Compressor, make, registry
from mpicomp.config import ConfigError, validate
from mpicomp.methods import available_methods, method_class
from mpicomp.methods import base as method_base
from mpicomp.problems import factory
from mpicomp.rng import RandomKey
from mpicomp.testing import check_rank_independent
from mpicomp.wire import MessageError, unpack_message
from tests.runs import run_inprocess

EXAMPLE_SRC = Path(__file__).resolve().parents[1] / "examples" / "plugin" / "src"
COINFLIP = "mpicomp_example.codecs:CoinFlip"


def clear_plugin_caches() -> None:
    for module in (registry, method_base, factory):
        module.plugins.cache_clear()


@pytest.fixture
def entry_points(monkeypatch):
    """Entry points from a dict ``{group: {name: "module:Class"}}`` set by the test (none by default)."""
    monkeypatch.syspath_prepend(str(EXAMPLE_SRC))
    declared: dict[str, dict[str, str]] = {}

    def fake(group: str) -> list[EntryPoint]:
        return [EntryPoint(name, value, group) for name, value in declared.get(group, {}).items()]

    monkeypatch.setattr(mpicomp.plugins, "entry_points", fake)
    clear_plugin_caches()
    yield declared
    clear_plugin_caches()


def test_module_class_factor_builds_composes_and_round_trips(entry_points):
    codec = make(f"{COINFLIP}(p=0.25)")
    assert codec.spec == f"{COINFLIP}(p=0.25)"  # not registered under a name: the spec names the class
    assert make(codec.spec) == codec
    composed = make(f"{COINFLIP}(p=0.5)∘randk(k=0.5)")
    assert composed.omega(100) == pytest.approx((1 + 1) * (1 + 1) - 1)
    x = np.arange(1.0, 101.0)
    key = RandomKey(3, 1, 0, 0)
    assert composed.decode(composed.encode(x, key), 100, key).shape == (100,)


def test_entry_points_register_names_and_bad_ones_are_one_line_each(entry_points, caplog):
    entry_points["mpicomp.compressors"] = {
        "coinflip": COINFLIP,
        "broken": "no_such_module:Codec",
        "natural": COINFLIP,  # the class is named coinflip, and "natural" is mpicomp's
        "lacking": "tests.test_plugins:NoOmega",
    }
    entry_points["mpicomp.methods"] = {"heavy-ball": "mpicomp_example.methods:HeavyBall", "gd": "numpy:ndarray"}
    with caplog.at_level(logging.WARNING, logger="mpicomp"):
        assert "coinflip" in registry.available()
        assert "heavy-ball" in available_methods()
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 4, lines
    assert all("\n" not in line for line in lines)
    expected = {
        "broken": "cannot import 'no_such_module'",
        "natural": "differs from the class's name 'coinflip'",
        "lacking": "lacks omega",
        "gd": "not a subclass of mpicomp.methods.base.Method",
    }
    for name, reason in expected.items():
        (line,) = [line for line in lines if f"plugin {name!r}" in line]
        assert "entry point mpicomp." in line and reason in line, line
    assert make("coinflip(p=0.5)").spec == "coinflip(p=0.5)"
    assert type(make("natural")).__module__ == "mpicomp.compressors.natural"
    assert method_class("gd").__module__ == "mpicomp.methods.quantized_sgd"


def test_an_entry_point_reusing_a_taken_name_is_refused(entry_points, caplog):
    entry_points["mpicomp.compressors"] = {"natural": "tests.test_plugins:NamedNatural"}
    with caplog.at_level(logging.WARNING, logger="mpicomp"):
        registry.available()
    (line,) = [record.getMessage() for record in caplog.records]
    assert "plugin 'natural'" in line and "taken by mpicomp.compressors.natural:Natural" in line


class NoOmega(Compressor):
    """Claims unbiased without an omega."""

    name = "lacking"
    unbiased = True

    def expected_bits(self, d):
        return 64 * d

    def _encode(self, x, key):
        return (), x.astype("<f8")

    def _decode(self, msg, key):
        return np.frombuffer(msg.payload, "<f8").copy()


class NamedNatural(NoOmega):
    """A complete codec that takes mpicomp's name ``natural``."""

    name = "natural"

    def omega(self, d):
        return 0.0


class ScaledCopy(NamedNatural):
    """A fixed-size outside codec with a scalar: ``s = max |x_i|`` and ``x / s`` as float64."""

    name = "scaled-copy"
    n_scalars = 1

    def payload_bytes(self, d):
        return 8 * d

    def _encode(self, x, key):
        scale = float(np.abs(x).max()) or 1.0
        return (scale,), (x / scale).astype("<f8")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("compressor.uplink", "no_such_module:Codec", "cannot import 'no_such_module'"),
        ("compressor.uplink", "mpicomp_example.codecs:Nope(p=0.1)", "has no attribute 'Nope'"),
        ("compressor.uplink", "numpy:ndarray", "not a subclass of mpicomp.compressors.base.Compressor"),
        ("compressor.uplink", "tests.test_plugins:NoOmega", "lacks omega"),
        ("method.name", "no_such_module:Method", "cannot import"),
        ("problem.name", "mpicomp_example.codecs:CoinFlip", "not a subclass of mpicomp.problems.base.Problem"),
    ],
)
def test_bad_targets_are_config_errors_naming_the_key(entry_points, key, value, message):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=message) as error:
        validate({section: {name: value}})
    assert str(error.value).startswith(f"[{section}] {name}") and "\n" not in str(error.value)


def test_outside_codecs_carry_their_tag(entry_points):
    codec = make(f"{COINFLIP}(p=0.5)")
    message = codec.encode(np.ones(16), RandomKey(1))
    parsed = unpack_message(message)
    assert parsed.codec == compressor_base.EXTENSION_CODEC == 255
    assert parsed.scalars[0] == compressor_base.extension_tag(COINFLIP) == codec.extension_tag
    assert codec.header_bits() == 8 * (16 + 8 + 4)  # header, the tag scalar, CRC-32
    with pytest.raises(MessageError, match="another outside codec"):
        NoOmega().decode(message, 16)


def test_an_outside_codecs_batched_messages_carry_its_tag_and_scalars():
    """``encode_many`` frames a fixed-size outside codec's rows (the tag, then the codec's scalars)
    exactly as ``encode`` frames each one."""
    codec, rows = ScaledCopy(), np.random.default_rng(3).standard_normal((5, 16))
    keys = [RandomKey(1, 0, w) for w in range(5)]
    batched = [bytes(m) for m in codec.encode_many(rows, keys)]
    assert batched == [bytes(codec.encode(row, key)) for row, key in zip(rows, keys, strict=True)]
    assert unpack_message(batched[2]).scalars == (float(codec.extension_tag), float(np.abs(rows[2]).max()))


def test_a_tag_collision_is_refused_at_class_creation(monkeypatch):
    target = f"{__name__}:test_a_tag_collision_is_refused_at_class_creation.<locals>.Clash"
    monkeypatch.setitem(compressor_base._EXTENSION_TAGS, compressor_base.extension_tag(target), "other.pkg:Codec")
    with pytest.raises(TypeError, match="collides with other.pkg:Codec"):

        class Clash(NoOmega):
            name = "clash"


def test_plugin_problem_and_method_run_in_process(entry_points, tmp_path):
    entry_points["mpicomp.problems"] = {"quadratics": "mpicomp_example.problems:Quadratics"}
    raw = {
        "problem": {"name": "quadratics", "dataset": "d=12,points=20"},
        "data": {"workers": 4},
        "method": {"name": "mpicomp_example.methods:HeavyBall", "momentum": 0.5},
        "run": {"rounds": 40},
    }
    results = run_inprocess(raw, tmp_path / "q.h5")
    assert results.status == "finished"
    sub = results.metrics["suboptimality"]
    # uncompressed heavy ball on a (1 + l2)-smooth, (1 + l2)-strongly convex f with gamma = (1 - beta) / L:
    # x - x* shrinks by the contraction of [[1 + beta - gamma L, -beta], [1, 0]] (spectral radius 1/sqrt 2)
    assert sub[-1] < 1e-6 * sub[0]
    assert np.all(results.metrics["momentum_norm"] > 0)


def test_a_plugin_problem_refuses_the_keys_it_does_not_take(entry_points):
    with pytest.raises(ValueError, match="built from dataset, l2, seed only"):
        factory.build_problem("mpicomp_example.problems:Quadratics", "d=3", 2, regularizer="l1", l1=0.1)


@pytest.mark.mpi
def test_module_class_specs_are_rank_independent_under_mpiexec(monkeypatch):
    """The done-when of issue 23: the plain-NumPy codec, the plugin method and problem, by module:Class
    under mpiexec -n 1 and -n 2 (the modules importable on every rank through PYTHONPATH)."""
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLE_SRC))
    check_rank_independent(
        {
            "problem": {"name": "mpicomp_example.problems:Quadratics", "dataset": "d=12,points=20"},
            "data": {"workers": 4},
            "method": {"name": "mpicomp_example.methods:HeavyBall"},
            "compressor": {"uplink": f"{COINFLIP}(p=0.5)", "downlink": f"{COINFLIP}(p=0.5)"},
            "run": {"rounds": 6},
        },
        ranks=(1, 2),
        timeout=300,
    )


def test_listings_name_each_plugin_and_its_package(entry_points, capsys):
    entry_points["mpicomp.compressors"] = {"coinflip": COINFLIP}
    entry_points["mpicomp.methods"] = {"heavy-ball": "mpicomp_example.methods:HeavyBall"}
    assert main(["compressors"]) == 0
    listing = capsys.readouterr().out
    assert f"coinflip  from unknown package  ({COINFLIP})" in listing  # test entry points belong to no distribution
    assert main(["methods"]) == 0
    assert "heavy-ball     heavy-ball: compressed gradients" in capsys.readouterr().out
