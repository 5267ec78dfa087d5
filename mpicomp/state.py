"""A run's state as flat ``{path: numpy array}`` maps (for checkpoints), and back into its live objects.

:func:`flatten` turns an attribute's value into ``{"name": array, "name/3": array,
"name/point": array, ...}``: arrays and numbers are leaves, dicts and lists add their key or index
to the path, an object that declares ``state_attrs`` adds each attribute's name, ``None`` adds
nothing. :func:`restore` walks the live value (the template a fresh method built) and returns it
with every leaf replaced by the stored one, so that a restored method is the one that was saved,
bit for bit. Paths never contain a rank: worker state is keyed by worker id.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

Leaf = np.ndarray | np.generic | int | float | bool


def flatten(value: Any, path: str, out: dict[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """``value``'s leaves as ``{path/...: array}``; arrays are views (store them before the next round)."""
    out = {} if out is None else out
    if value is None:
        return out
    if isinstance(value, Leaf):
        out[path] = np.asarray(value)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            flatten(item, f"{path}/{key}", out)
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            flatten(item, f"{path}/{index}", out)
    elif hasattr(value, "state_attrs"):
        for name in value.state_attrs:
            flatten(getattr(value, name), f"{path}/{name}", out)
    else:
        raise TypeError(f"state {path!r}: cannot save a {type(value).__name__} (give it state_attrs)")
    return out


def flatten_items(items: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """:func:`flatten` of each item under its own name."""
    out: dict[str, np.ndarray] = {}
    for name, value in items.items():
        flatten(value, name, out)
    return out


def restore_items(template: Mapping[str, Any], state: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """:func:`restore` of each item of ``template`` from the paths under its name."""
    return {name: restore(value, state, name) for name, value in template.items()}


def restore(template: Any, state: Mapping[str, np.ndarray], path: str) -> Any:
    """``template`` with its leaves replaced by ``state``'s (see the module docstring).

    A ``None`` in the template becomes the stored array if there is one (e.g. a reference point
    set after the start); a stored leaf that is missing, or of another shape, is a ``ValueError``.
    """
    if template is None:
        return None if path not in state else np.array(state[path])
    if isinstance(template, np.ndarray):
        stored = _leaf(state, path)
        if stored.shape != template.shape:
            raise ValueError(f"state {path!r} has shape {stored.shape}, the run needs {template.shape}")
        return np.array(stored, dtype=template.dtype)
    if isinstance(template, np.generic):
        return template.dtype.type(_leaf(state, path))
    if isinstance(template, bool | int | float):
        return type(template)(_leaf(state, path).item())
    if isinstance(template, dict):
        return {key: restore(item, state, f"{path}/{key}") for key, item in template.items()}
    if isinstance(template, list):
        return [restore(item, state, f"{path}/{index}") for index, item in enumerate(template)]
    if hasattr(template, "state_attrs"):
        for name in template.state_attrs:
            setattr(template, name, restore(getattr(template, name), state, f"{path}/{name}"))
        return template
    raise TypeError(f"state {path!r}: cannot restore a {type(template).__name__}")


def _leaf(state: Mapping[str, np.ndarray], path: str) -> np.ndarray:
    if path not in state:
        raise ValueError(f"state {path!r} is missing from the checkpoint")
    return np.asarray(state[path])
