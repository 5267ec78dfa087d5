"""Classes from other packages: entry points and ``module:Class`` targets.

A plugin is a class named by ``module:QualName``: either directly where mpicomp accepts a name
(a compressor factor ``"mypkg.codecs:FlipSign(p=0.1)"``, a ``[method] name``, a ``[problem] name``),
or registered under a short name through an entry point of one of the :data:`GROUPS`::

    [project.entry-points."mpicomp.compressors"]
    flipsign = "mypkg.codecs:FlipSign"

Entry points are read lazily, once per process per group. One that fails to import, is not a
subclass of the expected base, lacks what the base class requires or reuses a taken name is left
out and reported in one line (a ``mpicomp`` logger warning naming the plugin, entry point and
package); the rest keeps working. The module must be importable on every MPI rank.
"""

from __future__ import annotations

import importlib
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points

log = logging.getLogger("mpicomp")

GROUPS = ("mpicomp.compressors", "mpicomp.methods", "mpicomp.problems")
TARGET = re.compile(r"^\s*([A-Za-z_][\w.]*):([A-Za-z_][\w.]*)\s*(?:\((.*)\))?\s*$", re.DOTALL)


class PluginError(ValueError):
    """A plugin that cannot be used: the message is one line naming it and what is wrong."""


@dataclass(frozen=True)
class Plugin:
    """A class registered through an entry point: its short name, target and distribution."""

    name: str
    target: str  # "module:QualName"
    package: str  # the installed distribution that declares the entry point
    cls: type


def is_target(text: str) -> bool:
    """True for a ``module:Class`` or ``module:Class(args)`` spelling."""
    return TARGET.match(text) is not None


def split_target(text: str) -> tuple[str, str | None]:
    """``"pkg.mod:Cls(a=1)"`` -> ``("pkg.mod:Cls", "a=1")``; the arguments are None without parentheses."""
    match = TARGET.match(text)
    if match is None:
        raise PluginError(f"{text.strip()!r} is not a module:Class target")
    return f"{match.group(1)}:{match.group(2)}", match.group(3)


def target_of(cls: type) -> str:
    """The ``module:QualName`` that names ``cls``."""
    return f"{cls.__module__}:{cls.__qualname__}"


def load_target(target: str, base: type, what: str, check: Callable[[type], None] | None = None) -> type:
    """The class ``module:QualName`` names, imported now; it must subclass ``base`` and pass ``check``.
    PluginError (one line) otherwise."""
    module_name, _, qualname = split_target(target)[0].partition(":")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as error:  # noqa: BLE001  (any import failure is the plugin's, reported in one line)
        raise PluginError(
            f"{what} {target!r}: cannot import {module_name!r}: {type(error).__name__}: {error}"
        ) from None
    for part in qualname.split("."):
        if not hasattr(obj, part):
            raise PluginError(f"{what} {target!r}: module {module_name!r} has no attribute {qualname!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, base)):
        raise PluginError(f"{what} {target!r} is not a subclass of {base.__module__}.{base.__qualname__}")
    try:
        if check is not None:
            check(obj)
    except (TypeError, ValueError) as error:
        raise PluginError(f"{what} {target!r}: {error}") from None
    return obj


def load_entry_points(group: str, base: type, check: Callable[[str, type], None]) -> dict[str, Plugin]:
    """Every usable plugin of entry-point ``group`` by name; the others are logged, one line each.

    ``check(name, cls)`` raises TypeError or ValueError for a class mpicomp cannot use (a missing
    part of the base class, a taken name)."""
    found: dict[str, Plugin] = {}
    for point in sorted(entry_points(group=group), key=lambda p: p.name):
        package = point.dist.name if point.dist is not None else "unknown package"
        where = f"plugin {point.name!r} (entry point {group}: {point.name} = {point.value}, from {package})"
        try:
            if point.name in found:
                raise PluginError(f"the name is taken by {found[point.name].target} from {found[point.name].package}")
            cls = load_target(point.value, base, "class")
            check(point.name, cls)
        except (PluginError, TypeError, ValueError) as error:
            log.warning("mpicomp: %s skipped: %s", where, error)
            continue
        found[point.name] = Plugin(point.name, point.value, package, cls)
    return found


def package_of(cls: type, plugins: Mapping[str, Plugin]) -> str:
    """The distribution a class comes from: its entry point's, ``mpicomp`` for built-ins, else its module."""
    for plugin in plugins.values():
        if plugin.cls is cls:
            return plugin.package
    return "mpicomp" if cls.__module__.split(".")[0] == "mpicomp" else cls.__module__
