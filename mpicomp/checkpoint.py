"""Checkpoints: everything the next round depends on, in a file beside the results, and back.

``RUN.h5`` gets ``RUN.h5.ckpt`` (the newest checkpoint) and ``RUN.h5.ckpt.prev`` (the one before):
a checkpoint is written to ``RUN.h5.ckpt.tmp``, synced, and renamed over ``RUN.h5.ckpt`` after the
old one was renamed to ``.prev``, so a crash at any moment leaves at least one complete checkpoint
(the results file itself is in SWMR mode, which forbids creating datasets after the start). Each
dataset carries the SHA-256 of its bytes and the root attribute ``complete`` is written last;
:func:`usable_checkpoint` takes the newest checkpoint that passes these checks.

Layout (docs/results-format.md): ``/workers/<w>/<path>`` each logical worker's method state
(:meth:`Method.worker_state`, keyed by worker id, never by rank; no ``/workers`` at all, and the root
attribute ``stateless_workers``, when every state is empty), ``/shared/replica/...`` and
``/shared/master/...`` the model replica and the master's state, ``/run/...`` the runner's
(counted bytes, modelled time, the results file's row counts, the stop rules' reference loss, the
sampler's running moments). Worker states reach rank 0 a bounded chunk at a time
(:data:`CHUNK_BYTES`, ``Transport.gather_blobs``); on resume every rank reads its own workers.
Random streams need no saving: every draw comes from ``RandomKey(seed, round, worker, stream)``,
so the round index is their position.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from . import __version__
from .comm import Transport
from .compressors.base import CODEC_IDS
from .config import Config, ConfigError, parse_override, validate
from .methods import Method
from .results.guard import in_use
from .results.writer import FILE_LOCKING

CHECKPOINT_VERSION = 1
# what a resume reads besides the states (write_checkpoint writes them; the runner's attrs add the last four)
CHECKPOINT_ATTRS = ("mpicomp_version", "codec_table", "config", "round", "metric_rows", "sample_rows")
CHUNK_BYTES = 64 * 2**20  # worker state gathered to rank 0 at most this much at a time (one worker at least)
ENTRY_OVERHEAD = 512  # bytes of framing per array in a gathered blob (an upper bound, for chunking)


@dataclass(frozen=True)
class Resume:
    """Where a resumed run starts: its checkpoint file and the rounds that checkpoint completed."""

    checkpoint: Path
    round: int
    metric_rows: int  # rows of the results file the checkpoint's state belongs to
    sample_rows: int


class CheckpointError(ValueError):
    """A checkpoint is missing, damaged, or belongs to another version, codec table or config."""


def checkpoint_paths(results: str | os.PathLike) -> tuple[Path, Path]:
    """``(newest, previous)`` checkpoint files of the results file ``results``."""
    return Path(f"{results}.ckpt"), Path(f"{results}.ckpt.prev")


def codec_table() -> str:
    """The codec ids messages carry, as JSON (a checkpoint is only resumed with the same table)."""
    return json.dumps(sorted(CODEC_IDS.items()))


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _pack(state: Mapping[str, np.ndarray]) -> bytes:
    """One worker's state as the bytes of an ``.npz`` archive (no pickles)."""
    buffer = io.BytesIO()
    arrays: dict[str, Any] = dict(state)
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _unpack(blob: memoryview) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def _state_bytes(state: Mapping[str, np.ndarray]) -> int:
    return sum(array.nbytes + ENTRY_OVERHEAD for array in state.values())


def worker_chunks(sizes: np.ndarray, limit: int = CHUNK_BYTES) -> Iterator[range]:
    """Consecutive ranges of worker ids whose states add up to at most ``limit`` bytes (one at least)."""
    start, total = 0, 0.0
    for w, size in enumerate(sizes):
        if w > start and total + size > limit:
            yield range(start, w)
            start, total = w, 0.0
        total += size
    if start < len(sizes):
        yield range(start, len(sizes))


def _write_group(group: h5py.Group, state: Mapping[str, np.ndarray]) -> None:
    for path, array in state.items():
        dataset = group.create_dataset(path, data=array)
        dataset.attrs["sha256"] = _digest(array)


def write_checkpoint(
    results: str | os.PathLike,
    transport: Transport,
    method: Method,
    run_state: Mapping[str, np.ndarray] | None,
    attrs: Mapping[str, object] | None,
) -> None:
    """Collective: save every worker's state, the shared state and (master) ``run_state`` with ``attrs``.

    Every rank passes its method; only the master's ``run_state`` and ``attrs`` are used. Worker
    states travel to rank 0 in chunks of at most :data:`CHUNK_BYTES` (uncounted bookkeeping). A file
    error on the master (a full disk, a quota) does not stop it taking part in the gathers, so no rank
    is left waiting: it writes nothing more, removes the partial file and raises :class:`CheckpointError`
    once the others are done; the last complete checkpoint stays (as ``.prev`` if only the final rename
    failed).
    """
    local = transport.local_workers
    sizes = np.array([[_state_bytes(method.worker_state(w))] for w in local], dtype=np.float64).reshape(-1, 1)
    gathered_sizes = transport.gather_partials(sizes, everyone=True)
    assert gathered_sizes is not None  # everyone=True: every rank gets them
    everyone = gathered_sizes[:, 0]
    stateless = not everyone.any()  # no worker has state (sgd, gd): no /workers groups at all
    newest, _ = checkpoint_paths(results)
    file = _CheckpointFile(Path(f"{newest}.tmp")) if transport.is_master else None
    try:
        for chunk in [] if stateless else worker_chunks(everyone):
            blobs = [_pack(method.worker_state(w)) for w in chunk if w in local]
            gathered = transport.gather_blobs(blobs, chunk)
            if file is not None and gathered is not None:
                file.write(partial(_write_workers, chunk=chunk, gathered=gathered))
        if file is None:
            return
        if run_state is None or attrs is None:
            raise ValueError("the master must pass the run state and the checkpoint's attributes")
        file.write(partial(_write_run, method=method, run_state=run_state, attrs=attrs, stateless=stateless))
        file.publish(results)
    finally:
        if file is not None:
            file.discard()


def _write_workers(handle: h5py.File, chunk: range, gathered: Sequence[memoryview]) -> None:
    for w, blob in zip(chunk, gathered, strict=True):
        _write_group(handle.create_group(f"workers/{w}"), _unpack(blob))


def _write_run(
    handle: h5py.File, method: Method, run_state: Mapping[str, np.ndarray], attrs: Mapping[str, object], stateless: bool
) -> None:
    _write_group(handle.create_group("shared"), method.shared_state())
    _write_group(handle.create_group("run"), run_state)
    handle.attrs.update(
        {
            "checkpoint_version": CHECKPOINT_VERSION,
            "mpicomp_version": __version__,
            "codec_table": codec_table(),
            "method": method.name,
            "n_workers": method.n,
            "d": method.d,
            "stateless_workers": stateless,
            **attrs,
        }
    )
    handle.attrs["complete"] = True  # last: a checkpoint without it was cut short


class _CheckpointFile:
    """The master's temporary checkpoint file: writes until the first file error, which it keeps (h5py
    raises OSError, or RuntimeError when closing a file it could not extend) and raises at
    :meth:`publish`; :meth:`discard` removes whatever was not published."""

    def __init__(self, temporary: Path) -> None:
        self.temporary = temporary
        self.error: Exception | None = None
        self.handle: h5py.File | None = None
        try:
            self.handle = h5py.File(temporary, "w")
        except (OSError, RuntimeError) as exc:
            self.error = exc

    def write(self, action: Callable[[h5py.File], None]) -> None:
        """``action(handle)``, unless an earlier file error stopped the writing."""
        if self.error is not None or self.handle is None:
            return
        try:
            action(self.handle)
        except (OSError, RuntimeError) as exc:
            self.error = exc

    def publish(self, results: str | os.PathLike) -> None:
        """Close, sync and rename the file into place (the newest checkpoint becomes the previous one)."""
        newest, previous = checkpoint_paths(results)
        if self.error is None and self.handle is not None:
            try:
                self.handle.close()
                with open(self.temporary, "rb") as synced:
                    os.fsync(synced.fileno())
                if newest.exists():
                    os.replace(newest, previous)
                os.replace(self.temporary, newest)
            except (OSError, RuntimeError) as exc:
                self.error = exc
        if self.error is not None:
            raise CheckpointError(f"cannot write the checkpoint {newest}: {self.error}") from self.error

    def discard(self) -> None:
        """Close the file if still open and remove it unless it was published."""
        if self.handle is not None and self.handle.id.valid:
            with contextlib.suppress(OSError, RuntimeError):  # a file that could not be written goes anyway
                self.handle.close()
        if self.temporary.is_file():
            self.temporary.unlink()


def check_checkpoint(path: Path) -> dict[str, Any]:
    """``path``'s attributes if it is a complete, undamaged checkpoint of this version; else :class:`CheckpointError`."""
    if not path.exists():
        raise CheckpointError(f"{path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            attrs = dict(f.attrs)
            if not attrs.get("complete", False):
                raise CheckpointError(f"{path} is incomplete (the run was killed while writing it)")
            if attrs.get("checkpoint_version") != CHECKPOINT_VERSION:
                raise CheckpointError(
                    f"{path} has checkpoint version {attrs.get('checkpoint_version')!r}, this mpicomp reads "
                    f"{CHECKPOINT_VERSION}"
                )
            if missing := [name for name in CHECKPOINT_ATTRS if name not in attrs]:
                raise CheckpointError(f"{path} lacks the attributes {', '.join(missing)}: not a checkpoint of a run")
            damaged: list[str] = []

            def verify(name: str, item: object) -> None:
                if isinstance(item, h5py.Dataset) and _digest(item[()]) != item.attrs.get("sha256"):
                    damaged.append(name)

            f.visititems(verify)
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} cannot be read: {exc}") from None
    if damaged:
        raise CheckpointError(f"{path} is damaged: {damaged[0]} does not match its checksum")
    return {name: value.item() if isinstance(value, np.generic) else value for name, value in attrs.items()}


def usable_checkpoint(results: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """The newest checkpoint of ``results`` that :func:`check_checkpoint` accepts, with its attributes."""
    reasons = []
    for path in checkpoint_paths(results):
        try:
            return path, check_checkpoint(path)
        except CheckpointError as exc:
            reasons.append(str(exc))
    raise CheckpointError(f"no usable checkpoint for {results}: {'; '.join(reasons)}")


def _read_group(group: h5py.Group) -> dict[str, np.ndarray]:
    state: dict[str, np.ndarray] = {}
    group.visititems(lambda name, item: state.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None)
    return state


def load_checkpoint(path: Path, method: Method, local_workers: range) -> dict[str, np.ndarray]:
    """Put the saved state back into ``method`` (its shared state and its local workers', one
    worker at a time); returns the runner's ``/run`` state. Every rank reads the file itself."""
    with h5py.File(path, "r") as f:
        method.load_shared_state(_read_group(f["shared"]))
        stateless = bool(f.attrs.get("stateless_workers", False))
        for w in local_workers:
            method.load_worker_state(w, {} if stateless else _read_group(f[f"workers/{w}"]))
        return _read_group(f["run"])


RESUME_KEYS = (
    "rounds",
    "target_suboptimality",
    "bit_budget",
    "divergence_factor",
    "checkpoint_every",
    "checkpoint_seconds",
    "master_share",  # the layout of workers over ranks, which a resume may change (results do not depend on it)
)


def _without_resume_keys(config: Mapping) -> dict:
    return {**config, "run": {k: v for k, v in config["run"].items() if k not in RESUME_KEYS}}


def plan_resume(results: str | os.PathLike, overrides: list[str]) -> tuple[Config, Resume]:
    """The config and the checkpoint ``mpicomp run --resume results`` continues from, after every
    check that needs no rank but this one (read-only: nothing is changed). ``overrides`` are
    ``--set`` items; only ``[run]`` rounds, stop rules and checkpoint keys may change.
    :class:`CheckpointError` or :class:`ConfigError` with one line saying what is wrong."""
    path = Path(results)
    if not path.is_file():
        raise CheckpointError(f"{path} is not a results file ({'a directory' if path.is_dir() else 'not found'})")
    try:
        with h5py.File(path, "r", swmr=True, locking=FILE_LOCKING) as f:
            stored = json.loads(f.attrs["config"])
            version = f.attrs.get("mpicomp_version")
            status = f["status"][()].decode()
            metric_rows = min((column.shape[0] for column in f["metrics"].values()), default=0)
            sample_rows = f["samples"].shape[0] if "samples" in f else 0
    except (OSError, KeyError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable mpicomp results file: {exc}") from None
    if not (isinstance(stored, dict) and "run" in stored and all(isinstance(t, dict) for t in stored.values())):
        raise CheckpointError(f"{path} holds no config of `mpicomp run` (a results file another program wrote?)")
    if reason := in_use(path):
        raise CheckpointError(f"not resuming {reason}")
    if version != __version__:
        raise CheckpointError(
            f"{path} was written by mpicomp {version}, this is {__version__}; resume it with that version"
        )
    raw = {section: {k: v for k, v in table.items() if v is not None} for section, table in stored.items()}
    for text in overrides:
        section, key, value = parse_override(text)
        if section != "run" or key not in RESUME_KEYS:
            allowed = ", ".join(f"run.{name}" for name in RESUME_KEYS)
            raise ConfigError(f"--set {text!r}: a resumed run keeps its config; only {allowed} may change")
        raw["run"][key] = value
    config = validate(raw)
    checkpoint, attrs = usable_checkpoint(path)
    if attrs["mpicomp_version"] != __version__ or attrs["codec_table"] != codec_table():
        raise CheckpointError(
            f"{checkpoint} was written by mpicomp {attrs['mpicomp_version']} with another codec table"
        )
    if _without_resume_keys(json.loads(attrs["config"])) != _without_resume_keys(stored):
        raise CheckpointError(f"{checkpoint} belongs to another run than {path} (their configs differ)")
    done = int(attrs["round"])
    if done >= config.run["rounds"]:
        raise CheckpointError(
            f"{path} is {status} after round {done} of run.rounds = {config.run['rounds']}; "
            f"pass --set run.rounds=N with N > {done} to continue it"
        )
    if metric_rows < attrs["metric_rows"] or sample_rows < attrs["sample_rows"]:
        raise CheckpointError(f"{path} holds fewer rows than its checkpoint {checkpoint} (a damaged results file)")
    return config, Resume(checkpoint, done, int(attrs["metric_rows"]), int(attrs["sample_rows"]))
