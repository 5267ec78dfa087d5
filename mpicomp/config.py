"""Run configuration: TOML sections validated up front against one schema.

Sections: ``[problem]``, ``[data]``, ``[method]``, ``[compressor]``, ``[run]``, ``[network]``.
Every key has a type, a default and (where it applies) allowed values or bounds; the
``[method]`` table accepts ``name`` plus the fields of that method's ``Options`` dataclass.
Any unknown key, wrong type or bad value raises :class:`ConfigError` with a one-line message
naming the key and what is allowed.
"""

from __future__ import annotations

import builtins
import dataclasses
import math
import re
import tomllib
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .comm.mpi import WAIT_MODES
from .comm.network import TOPOLOGIES
from .comm.packets import PACKET_SIZES
from .compressors import make as make_compressor
from .compressors.switch_encoding import MPICOMP_UPLINKS, SWITCH_FORMATS, SWITCHML_MAX_WORKERS
from .data.fetch import LIBSVM_NAMES, MNIST
from .data.loaders import SCALINGS
from .data.partition import PARTITIONS
from .methods import Method, available_methods, method_class
from .methods.in_network import AGGREGATIONS
from .plugins import PluginError
from .problems import PROBLEMS, REGULARIZERS
from .problems.factory import problem_class
from .problems.start import INITS, is_init


class ConfigError(ValueError):
    """An invalid configuration; the message names the key and the allowed values."""


@dataclass(frozen=True)
class Key:
    """One config key: its type, default, and constraints.

    ``type = list`` is a list-valued key whose entries have type ``item`` (int or float); the
    choices and the minimum then apply to every entry.
    """

    type: type | tuple[type, ...]
    default: Any
    help: str
    choices: tuple[Any, ...] | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    item: builtins.type | None = None
    maximum: float | None = None


SCHEMA: dict[str, dict[str, Key]] = {
    "problem": {
        "name": Key(str, "logistic", f"objective: {', '.join(PROBLEMS)}, a plugin's name or module:Class"),
        "dataset": Key(
            str,
            "sklearn:breast_cancer",
            "sklearn:NAME, mnist, libsvm:a9a (see mpicomp data list), mnist:DIR, a LIBSVM file or a .npz file",
        ),
        "l2": Key(float, 1e-3, "smooth L2 weight (l2/2)||x||^2 inside every f_i", minimum=0.0),
        "nonconvex": Key(float, 0.0, "weight of the nonconvex regulariser sum x^2/(1+x^2)", minimum=0.0),
        "regularizer": Key(str, "none", "nonsmooth R handled by prox", choices=REGULARIZERS),
        "l1": Key(float, 0.0, "L1 weight of R (l1, elastic)", minimum=0.0),
        "r_l2": Key(float, 0.0, "L2 weight of R (l2, elastic)", minimum=0.0),
        "intercept": Key(bool, True, "append a constant-1 feature"),
        "positive_class": Key(float, None, "binary logistic on multiclass data: this label is +1, the rest -1"),
        "hidden": Key(list, [200], "mlp: hidden layer widths, input to output", minimum=1, item=int),
        "init": Key(
            str,
            "default",
            "x^0: default (the problem's own), zeros, normal (init_scale) or a path to a .npy file of d values",
        ),
        "init_scale": Key(
            float, 1.0, "init = normal: standard deviation of x^0's entries", minimum=0.0, exclusive_minimum=True
        ),
    },
    "data": {
        "workers": Key(int, 8, "number of logical workers n", minimum=1),
        "partition": Key(str, "iid", "how samples are split over workers", choices=PARTITIONS),
        "dirichlet_alpha": Key(
            float, 0.5, "Dirichlet concentration for partition = dirichlet", minimum=0.0, exclusive_minimum=True
        ),
        "lognormal_sigma": Key(float, 1.0, "lognormal spread of shard sizes for partition = unbalanced", minimum=0.0),
        "scale": Key(str, "standard", "feature scaling fitted on the train split", choices=SCALINGS),
        "batch": Key(int, 0, "minibatch size per worker and round (0 = full local gradient)", minimum=0),
        "test_fraction": Key(float, 0.2, "held-out fraction for test accuracy", minimum=0.0),
    },
    "compressor": {
        "uplink": Key(str, "identity", "worker compressor C_W (spec, see `mpicomp compressors`)"),
        "downlink": Key(str, "identity", "master compressor C_M (spec)"),
        "aggregation": Key(
            str, "gather", "sum the uploads at the master or in the emulated switch", choices=AGGREGATIONS
        ),
        "packet_values": Key(int, 256, "values per switch packet (ATP's packets hold 62)", choices=PACKET_SIZES),
        "switch_format": Key(
            str,
            "mpicomp",
            "the switch's packets and host quantiser: mpicomp (fixed point or natural), switchml, atp",
            choices=SWITCH_FORMATS,
        ),
        "checksum": Key(
            bool, False, "append a CRC-32 to every message (MPI delivers bytes intact; for stored or fuzzed messages)"
        ),
    },
    "run": {
        "rounds": Key(int, 200, "number of rounds", minimum=1),
        "seed": Key(int, 0, "root seed (numpy SeedSequence)", minimum=0),
        "threads": Key(int, 1, "BLAS threads per MPI rank", minimum=1),
        "wait": Key(
            str,
            "auto",
            "how ranks wait in collectives: sleep between polls, busy (MPI's own), auto = sleep when "
            "a node hosts more ranks than cores",
            choices=WAIT_MODES,
        ),
        "master_share": Key(
            float,
            1.0,
            "workers on rank 0, which also runs the master, per worker on any other rank: lower it when the "
            "master's decoding makes rank 0 the slowest (many workers, many ranks); results do not change",
            minimum=0.0,
            maximum=1.0,
        ),
        "log_every": Key(int, 1, "log metrics every N rounds", minimum=1),
        "flush_every": Key(int, 10, "flush the HDF5 file every N logged rows", minimum=1),
        "check_every": Key(int, 50, "compare model replicas across ranks every N rounds", minimum=1),
        "optimum": Key(bool, True, "compute the reference optimum F*, x* (L-BFGS, cached) for suboptimality"),
        "target_suboptimality": Key(float, 0.0, "stop when F(x) - F* <= this (0 = off)", minimum=0.0),
        "bit_budget": Key(float, 0.0, "stop when bits up + down exceed this (0 = off)", minimum=0.0),
        "divergence_factor": Key(float, 1e6, "diverged if F(x) > factor * F(x0) or not finite", minimum=1.0),
        "checkpoint_every": Key(
            int, 0, "write a checkpoint every N rounds (0 = only by time, at the end and on SIGTERM/SIGUSR1)", minimum=0
        ),
        "checkpoint_seconds": Key(
            float, 600.0, "also write one when this many seconds passed since the last (0 = off)", minimum=0.0
        ),
        "burn_in": Key(int, 0, "samplers: rounds before the first draw is stored in /samples", minimum=0),
        "thin": Key(int, 1, "samplers: store every N-th draw after burn-in", minimum=1),
    },
    "network": {
        "latency": Key(float, 1e-5, "per-message latency in seconds", minimum=0.0),
        "bandwidth": Key(float, 1.25e8, "link bandwidth in bytes/s", minimum=0.0, exclusive_minimum=True),
        "topology": Key(
            str, "serial", "serial or parallel parameter server, switch, or ring all-reduce", choices=TOPOLOGIES
        ),
        "in_flight": Key(int, 128, "switch: packets a worker keeps outstanding (SwitchML's pool)", minimum=1),
    },
}
RENAMED = {
    ("data", "alpha"): "dirichlet_alpha",
    ("data", "sigma"): "lognormal_sigma",
    ("network", "uplink"): "topology",
}
PATH_SCHEMES = ("mnist", "npz", "svmlight", "libsvm")  # dataset specs naming a file or directory
NAMED_SCHEMES = ("sklearn", "synthetic")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
KIND_ONLY_KEYS = {"burn_in": "sampler", "thin": "sampler", "target_suboptimality": "optimizer"}


def _type_name(t: type | tuple[type, ...]) -> str:
    types = t if isinstance(t, tuple) else (t,)
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}
    return " or ".join(names.get(x, x.__name__) for x in types)


def _check_value(where: str, key: Key, value: Any) -> Any:
    if key.type is list:
        assert key.item is not None, "a list key names the type of its entries"
        if not isinstance(value, list) or not value:
            raise ConfigError(f"{where}: expected a non-empty list, each entry {_type_name(key.item)}, got {value!r}")
        entry = dataclasses.replace(key, type=key.item, item=None)
        return [_check_value(f"{where}[{i}]", entry, v) for i, v in enumerate(value)]
    accepts_float = key.type is float or (isinstance(key.type, tuple) and float in key.type)
    if accepts_float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    ok = isinstance(value, key.type) and not (isinstance(value, bool) and key.type is not bool)
    if not ok:
        raise ConfigError(f"{where}: expected {_type_name(key.type)}, got {value!r}")
    if key.choices is not None and value not in key.choices:
        raise ConfigError(f"{where}: {value!r} is not allowed; choose one of {', '.join(map(repr, key.choices))}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    if isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        raise ConfigError(f"{where}: {value} does not fit in a 64-bit integer (at most {INT64_MAX})")
    if key.minimum is not None and not isinstance(value, bool):
        low = value <= key.minimum if key.exclusive_minimum else value < key.minimum
        if low:
            op = ">" if key.exclusive_minimum else ">="
            raise ConfigError(f"{where}: must be {op} {key.minimum}, got {value!r}")
    if key.maximum is not None and not isinstance(value, bool) and value > key.maximum:
        raise ConfigError(f"{where}: must be <= {key.maximum}, got {value!r}")
    return value


def _option_keys(options_cls: type) -> dict[str, Key]:
    """Schema keys from a method's Options dataclass (types from annotations, limits from metadata)."""
    hints = typing.get_type_hints(options_cls)
    keys = {}
    for field in dataclasses.fields(options_cls):
        hint = hints[field.name]
        union = typing.get_origin(hint) in (typing.Union, types.UnionType)
        args = tuple(a for a in typing.get_args(hint) if a is not type(None)) if union else (hint,)
        item = None
        if len(args) == 1 and typing.get_origin(args[0]) is list:
            (item,) = typing.get_args(args[0])
            args = (list,)
        meta = field.metadata
        default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
        keys[field.name] = Key(
            args if len(args) > 1 else args[0],
            default,
            meta.get("help", ""),
            choices=meta.get("choices"),
            minimum=meta.get("minimum"),
            exclusive_minimum=meta.get("exclusive_minimum", False),
            item=item,
        )
    return keys


@dataclass(frozen=True)
class Config:
    """A validated configuration: one plain dict per section, every key filled in."""

    problem: dict[str, Any]
    data: dict[str, Any]
    method: dict[str, Any]
    compressor: dict[str, Any]
    run: dict[str, Any]
    network: dict[str, Any]

    def as_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def method_options(self) -> Any:
        """The ``Options`` dataclass instance of the configured method."""
        cls = method_class(self.method["name"])
        return cls.Options(**{k: v for k, v in self.method.items() if k != "name"})


def _validate_section(section: str, table: Any, schema: dict[str, Key]) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"[{section}] must be a table, got {table!r}")
    for (where, old), new in RENAMED.items():
        if where == section and old in table:
            raise ConfigError(f"[{section}] {old} was renamed: write {new} = {table[old]!r} instead")
    unknown = sorted(set(table) - set(schema))
    if unknown:
        raise ConfigError(f"[{section}] unknown key {unknown[0]!r}; allowed keys: {', '.join(schema)}")
    out = {}
    for name, key in schema.items():
        value = table.get(name, key.default)
        out[name] = value if value is None and name not in table else _check_value(f"[{section}] {name}", key, value)
    return out


def validate(raw: dict[str, Any]) -> Config:
    """Validate a raw TOML mapping into a :class:`Config` (raises :class:`ConfigError`)."""
    allowed = (*SCHEMA, "method")
    unknown = sorted(set(raw) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown section [{unknown[0]}]; allowed sections: {', '.join(f'[{s}]' for s in allowed)}")
    sections = {name: _validate_section(name, raw.get(name, {}), schema) for name, schema in SCHEMA.items()}
    method_table = dict(raw.get("method", {}))
    name = method_table.pop("name", "gd")
    try:
        cls = method_class(name) if isinstance(name, str) else None
    except PluginError as exc:
        raise ConfigError(f"[method] name: {exc}") from None
    except ValueError:
        cls = None
    if cls is None:
        names = ", ".join(map(repr, available_methods()))
        raise ConfigError(f"[method] name: {name!r} is not allowed; choose one of {names} or a module:Class")
    options = _validate_section("method", method_table, _option_keys(cls.Options))
    try:
        cls.Options(**options)
    except ValueError as exc:
        raise ConfigError(f"[method] {exc}") from None
    try:
        problem_class(sections["problem"]["name"])
    except ValueError as exc:
        raise ConfigError(f"[problem] name: {exc}") from None
    for direction in ("uplink", "downlink"):
        spec = sections["compressor"][direction]
        try:
            make_compressor(spec)
        except ValueError as exc:
            raise ConfigError(f"[compressor] {direction}: {exc}") from None
    if cls.requires_unbiased_uplink and not make_compressor(sections["compressor"]["uplink"]).unbiased:
        raise ConfigError(
            f"[compressor] uplink: method {name!r} needs an unbiased compressor, "
            f"{sections['compressor']['uplink']!r} is biased (e.g. use 'qsgd(s=16)' or 'natural')"
        )
    _check_kind(cls, sections["run"])
    _check_aggregation(cls, sections["compressor"], sections["data"]["workers"])
    if sections["run"]["target_suboptimality"] > 0 and not sections["run"]["optimum"]:
        raise ConfigError(
            "[run] target_suboptimality: needs the reference optimum; set [run] optimum = true or drop it"
        )
    _check_init(sections["problem"])
    if sections["data"]["test_fraction"] >= 1.0:
        raise ConfigError(f"[data] test_fraction: must be < 1, got {sections['data']['test_fraction']!r}")
    if sections["problem"]["regularizer"] != "none" and not cls.supports_prox:
        prox_methods = ", ".join(n for n, c in available_methods().items() if c.supports_prox) or "none yet"
        raise ConfigError(
            f"[problem] regularizer: method {name!r} has no prox step; "
            f"use regularizer = 'none' or a prox method ({prox_methods})"
        )
    return Config(method={"name": name, **options}, **sections)


def _check_init(problem: dict[str, Any]) -> None:
    """``init``: one of INITS or a .npy path; ``init_scale`` only with ``init = "normal"``."""
    init = problem["init"]
    if not is_init(init):
        raise ConfigError(
            f"[problem] init: {init!r} is not allowed; choose one of {', '.join(map(repr, INITS))} "
            "or a path to a .npy file"
        )
    if init != "normal" and problem["init_scale"] != SCHEMA["problem"]["init_scale"].default:
        raise ConfigError(f"[problem] init_scale: only with init = 'normal' (init is {init!r}); drop the key")


def _check_kind(method: type[Method], run: dict[str, Any]) -> None:
    """Refuse [run] keys that mean nothing for the method's kind (optimizer or sampler)."""
    for key, kind in KIND_ONLY_KEYS.items():
        if run[key] != SCHEMA["run"][key].default and method.kind != kind:
            raise ConfigError(
                f"[run] {key}: only for {kind} methods, and {method.name!r} is of kind {method.kind!r}; drop the key"
            )


def _check_aggregation(method: type[Method], compressor: dict[str, Any], workers: int) -> None:
    """``aggregation = "switch"`` needs a method whose aggregate is a sum and compressors with an integer form."""
    switch_format = compressor["switch_format"]
    if compressor["aggregation"] != "switch":
        if switch_format != SCHEMA["compressor"]["switch_format"].default:
            raise ConfigError(
                f"[compressor] switch_format: {switch_format!r} needs aggregation = 'switch'; drop the key or set it"
            )
        return
    if switch_format == "switchml" and workers > SWITCHML_MAX_WORKERS:
        raise ConfigError(
            f"[compressor] switch_format: 'switchml' aggregates at most {SWITCHML_MAX_WORKERS} workers "
            f"(its 32-bit worker bitmap), [data] workers = {workers}"
        )
    summing = ", ".join(n for n, c in available_methods().items() if c.switch_aggregation)
    if not method.switch_aggregation:
        raise ConfigError(
            f"[compressor] aggregation: method {method.name!r} does not aggregate a plain sum of worker vectors "
            f"(its master keeps state), so the switch cannot do its aggregation; use 'gather' or one of {summing}"
        )
    uplink = make_compressor(compressor["uplink"])
    if switch_format != "mpicomp" and uplink.name != "identity":
        raise ConfigError(
            f"[compressor] uplink: switch_format = {switch_format!r} quantises float vectors, "
            f"use 'identity' (got {uplink.spec!r})"
        )
    if uplink.name not in MPICOMP_UPLINKS:
        raise ConfigError(
            f"[compressor] uplink: {uplink.spec!r} has no integer form for the switch; "
            f"use {' or '.join(map(repr, MPICOMP_UPLINKS))} (or aggregation = 'gather')"
        )
    if make_compressor(compressor["downlink"]) != make_compressor("identity"):
        raise ConfigError(
            f"[compressor] downlink: the switch multicasts its integer sum, it cannot apply {compressor['downlink']!r}; "
            "use 'identity' (or aggregation = 'gather')"
        )


def parse_override(text: str) -> tuple[str, str, Any]:
    """Parse ``section.key=value``; the value is read as a TOML value, else as a bare string."""
    target, sep, value = text.partition("=")
    section, dot, key = target.strip().partition(".")
    if not sep or not dot or not section or not key:
        raise ConfigError(f"--set {text!r}: expected section.key=value, e.g. run.rounds=100")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return section, key.strip(), parsed


def resolve_dataset(spec: str, base: Path) -> str:
    """A dataset spec with its relative path made relative to ``base`` (the config file's directory);
    ``sklearn:`` and ``synthetic`` specs name no file and are returned unchanged, and so are the
    cached datasets ``mnist`` and ``libsvm:NAME`` (unless ``base`` holds a file NAME)."""
    scheme, sep, rest = spec.partition(":")
    if spec == MNIST.name or (
        sep and scheme in ("libsvm", "svmlight") and rest in LIBSVM_NAMES and not (base / rest).is_file()
    ):
        return spec
    if sep and scheme in PATH_SCHEMES:
        return f"{scheme}:{_resolved(rest, base)}"
    if scheme in NAMED_SCHEMES or not spec or (sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9_+.-]+", scheme)):
        return spec  # no file, or a mistyped scheme the loader names in its error
    return _resolved(spec, base)


def _resolved(path: str, base: Path) -> str:
    expanded = Path(path).expanduser()
    return str(expanded if expanded.is_absolute() else base / expanded)


def load(path: str | Path | None, overrides: Sequence[str] = ()) -> Config:
    """Read a TOML file (or start from defaults when ``path`` is None), apply overrides, validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {str(path)!r} not found") from None
        except IsADirectoryError:
            raise ConfigError(f"config file {str(path)!r} is a directory; give a TOML file") from None
        except UnicodeDecodeError:
            raise ConfigError(
                f"config file {str(path)!r} is not UTF-8 text (a binary file?); give a TOML file"
            ) from None
        except OSError as exc:
            raise ConfigError(f"config file {str(path)!r} cannot be read: {exc.strerror or exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        problem = raw.get("problem")
        if isinstance(problem, dict) and isinstance(problem.get("dataset"), str):
            problem["dataset"] = resolve_dataset(problem["dataset"], Path(path).parent)
        if isinstance(problem, dict) and isinstance(problem.get("init"), str) and problem["init"].endswith(".npy"):
            problem["init"] = _resolved(problem["init"], Path(path).parent)
    for text in overrides:
        section, key, value = parse_override(text)
        raw.setdefault(section, {})
        if not isinstance(raw[section], dict):
            raise ConfigError(f"--set {text!r}: [{section}] is not a table")
        raw[section][key] = value
    return validate(raw)
