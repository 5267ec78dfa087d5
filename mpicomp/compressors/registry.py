"""Compressor registry and spec parser: ``make("natural∘randk(k=0.1)")``.

A spec is one or more factors joined by ``∘`` (or ``*``), applied right to left; each
factor is ``name`` or ``name(key=value, ...)`` with Python literals as values
(``inf`` is accepted for p). A bad spec raises ``ValueError`` naming the bad part and
listing what is valid.

Names are mpicomp's codecs and the plugins of entry-point group ``mpicomp.compressors`` (read on
the first name that is not built in, once); a factor may also name a class directly,
``module:Class`` or ``module:Class(key=value, ...)`` (:mod:`mpicomp.plugins`).
"""

from __future__ import annotations

import ast
import inspect
import re
from functools import cache

from ..plugins import Plugin, PluginError, load_entry_points, load_target, split_target, target_of
from .base import Compressor

_REGISTRY: dict[str, type[Compressor]] = {}
_FACTOR = re.compile(r"^\s*([A-Za-z][\w-]*|[A-Za-z_][\w.]*:[A-Za-z_][\w.]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
COMPOSE_SYMBOLS = ("∘", "*")
GROUP = "mpicomp.compressors"


def register(cls: type[Compressor]) -> type[Compressor]:
    """Class decorator adding a compressor to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise RuntimeError(f"compressor name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def check_plugin(cls: type[Compressor]) -> None:
    """TypeError unless ``cls`` has what a usable compressor needs (docs/extending.md)."""
    missing = [part for part in ("name", "unbiased") if not hasattr(cls, part)]
    if inspect.isabstract(cls):
        missing += sorted(cls.__abstractmethods__)
    if cls._encode is Compressor._encode and cls.payload_bytes is Compressor.payload_bytes:
        missing.append("_encode (or payload_bytes and _encode_into)")
    if getattr(cls, "unbiased", False) and cls.omega is Compressor.omega:
        missing.append("omega (it declares unbiased = True)")
    if missing:
        raise TypeError(f"compressor class lacks {', '.join(missing)}")


def _check_entry_point(name: str, cls: type) -> None:
    check_plugin(cls)
    if getattr(cls, "name", None) != name:
        raise TypeError(f"the entry point's name differs from the class's name {getattr(cls, 'name', None)!r}")
    if name in _REGISTRY:
        raise TypeError(f"the name is taken by {target_of(_REGISTRY[name])}")


@cache
def plugins() -> dict[str, Plugin]:
    """The compressors of entry-point group ``mpicomp.compressors`` (read once; bad ones logged and left out)."""
    return load_entry_points(GROUP, Compressor, _check_entry_point)


def available() -> dict[str, type[Compressor]]:
    """Compressor classes by name, mpicomp's and the plugins' (composition excluded: it is spelled ``a∘b``)."""
    names = {**{name: p.cls for name, p in plugins().items()}, **_REGISTRY}
    return {name: cls for name, cls in sorted(names.items()) if name != "compose"}


def spec_name(cls: type[Compressor]) -> str:
    """The name a spec uses for ``cls``: its registered name, or ``module:QualName`` for any other class."""
    name = getattr(cls, "name", "")
    registered = _REGISTRY.get(name)
    if registered is None and name in plugins():
        registered = plugins()[name].cls
    return name if registered is cls else target_of(cls)


def _factor_class(name: str) -> type[Compressor]:
    """The class a factor names: built in, a plugin, or a ``module:Class`` target."""
    if ":" in name:
        try:
            return load_target(name, Compressor, "compressor", check_plugin)
        except PluginError as error:
            raise ValueError(str(error)) from None
    if name in _REGISTRY and name != "compose":
        return _REGISTRY[name]
    if name in plugins():
        return plugins()[name].cls
    raise ValueError(f"unknown compressor {name!r}; known compressors: {', '.join(available())}")


def parameters(cls: type[Compressor]) -> list[str]:
    """The spec parameters a compressor accepts (its constructor's keyword arguments)."""
    params = inspect.signature(cls.__init__).parameters.values()
    variadic = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [p.name for p in params if p.name != "self" and p.kind not in variadic]


def _literal(text: str, where: str) -> object:
    text = text.strip()
    if text in ("inf", "+inf"):
        return float("inf")
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if re.fullmatch(r"[A-Za-z_]\w*", text):
            return text
        raise ValueError(f"compressor spec {where}: cannot read value {text!r}") from None


def _make_factor(factor: str) -> Compressor:
    match = _FACTOR.match(factor)
    names = ", ".join(available())
    if not match:
        raise ValueError(
            f"malformed compressor spec {factor.strip()!r}: expected name or name(key=value, ...); known: {names}"
        )
    name, args = match.group(1), match.group(2)
    cls = _factor_class(split_target(name)[0] if ":" in name else name)
    allowed = parameters(cls)
    kwargs: dict[str, object] = {}
    for item in filter(None, (a.strip() for a in (args or "").split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in allowed:
            valid = ", ".join(allowed) or "none"
            raise ValueError(f"compressor {name!r}: bad parameter {item!r}; valid parameters: {valid}")
        kwargs[key] = _literal(value, f"{name}({key}=...)")
    return cls(**kwargs)


def make(spec: str | Compressor) -> Compressor:
    """Build a compressor from a spec string (a Compressor is returned as is)."""
    if isinstance(spec, Compressor):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"compressor spec must be a non-empty string, got {spec!r}; known: {', '.join(available())}")
    text = spec.replace("*", "∘")
    factors = text.split("∘")
    if len(factors) == 1:
        return _make_factor(factors[0])
    from .compose import Compose  # compose registers itself through this module

    compressor = _make_factor(factors[-1])
    for factor in reversed(factors[:-1]):
        compressor = Compose(_make_factor(factor), compressor)
    return compressor
