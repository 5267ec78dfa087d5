"""Compressor registry and spec parser: ``make("natural∘randk(k=0.1)")``.

A spec is one or more factors joined by ``∘`` (or ``*``), applied right to left; each
factor is ``name`` or ``name(key=value, ...)`` with Python literals as values
(``inf`` is accepted for p). A bad spec raises ``ValueError`` naming the bad part and
listing what is valid.
"""

from __future__ import annotations

import ast
import inspect
import re

from .base import Compressor

_REGISTRY: dict[str, type[Compressor]] = {}
_FACTOR = re.compile(r"^\s*([A-Za-z][\w-]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)
COMPOSE_SYMBOLS = ("∘", "*")


def register(cls: type[Compressor]) -> type[Compressor]:
    """Class decorator adding a compressor to the registry under ``cls.name``."""
    if cls.name in _REGISTRY:
        raise RuntimeError(f"compressor name {cls.name!r} registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def available() -> dict[str, type[Compressor]]:
    """Registered compressor classes by name (composition excluded: it is spelled ``a∘b``)."""
    return {name: cls for name, cls in sorted(_REGISTRY.items()) if name != "compose"}


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
    if name not in _REGISTRY or name == "compose":
        raise ValueError(f"unknown compressor {name!r}; known compressors: {names}")
    cls = _REGISTRY[name]
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
    compressor = _make_factor(factors[-1])
    for factor in reversed(factors[:-1]):
        compressor = _REGISTRY["compose"](_make_factor(factor), compressor)
    return compressor
