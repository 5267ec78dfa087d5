"""The round loop: build everything from a Config, run, stream metrics to HDF5 (rank 0).

Every rank builds the problem with the shards of the workers the transport assigns to it (a
worker's shard depends on its id only), the same compressors and the method. Rank 0 is also
the master: it aggregates, logs metrics, evaluates stop rules and tells every rank whether to
stop, so all ranks leave the loop after the same round. Metrics over all data are collective:
on the rounds the master logs, every rank computes its own workers' share (:func:`record.evaluate`).
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from ._vector_width import vector_width_summary
from .checkpoint import CheckpointError, Resume, checkpoint_paths, load_checkpoint, write_checkpoint
from .comm import (
    AggregationOverflowError,
    ByteCounter,
    NetworkModel,
    RoundBytes,
    Transport,
    balanced_master_share,
    make_transport,
)
from .comm.packets import warm_up_packets
from .comm.signals import SignalWatch
from .compressors import make as make_compressor
from .compressors import message_checksums
from .config import Config, ConfigError
from .methods import OPTIMIZER, SAMPLER, Method, MethodContext, method_class
from .problems import build_problem
from .problems.base import Collective, Problem
from .problems.start import initial_point
from .progress import Progress
from .record import (
    WORKER_COLUMNS,
    PosteriorTracker,
    communication,
    dtypes,
    evaluate,
    metric_columns,
)
from .results import ResultsWriter
from .results.writer import RESUMABLE, config_json
from .rng import root_seed
from .state import flatten_items, restore_items
from .timing import CODEC, Stopwatch

log = logging.getLogger("mpicomp")

CONTINUE, FINISHED, STOPPED, DIVERGED, SUSPENDED = 0, 1, 2, 3, 4
STATUS = {FINISHED: "finished", STOPPED: "stopped", DIVERGED: "diverged", SUSPENDED: RESUMABLE}
SAVE, SIGNALLED = 16, 32  # flags the master adds to the agreed stop code: checkpoint now; then end (a signal)
CODE_MASK = SAVE - 1


@dataclass
class RunResult:
    status: str
    message: str
    rounds: int
    x: np.ndarray
    last_row: dict[str, float]


def build_problem_from(config: Config, seed: int, collective: Collective | None = None) -> Problem:
    """The config's problem; with a ``collective`` (the run's transport) holding only that rank's workers' shards."""
    p, data = config.problem, config.data
    return build_problem(
        p["name"],
        p["dataset"],
        data["workers"],
        l2=p["l2"],
        nonconvex=p["nonconvex"],
        regularizer=p["regularizer"],
        l1=p["l1"],
        r_l2=p["r_l2"],
        intercept=p["intercept"],
        partition=data["partition"],
        dirichlet_alpha=data["dirichlet_alpha"],
        lognormal_sigma=data["lognormal_sigma"],
        positive_class=p["positive_class"],
        hidden=tuple(p["hidden"]),
        scale=data["scale"],
        test_fraction=data["test_fraction"],
        seed=seed,
        collective=collective,
    )


def build_method(
    config: Config, problem: Problem, transport: Transport, seed: int, start: np.ndarray | None = None
) -> Method:
    """The config's method on ``problem``, starting from ``start`` (None: the problem's own x^0)."""
    ctx = MethodContext(
        problem=problem,
        uplink=make_compressor(config.compressor["uplink"]),
        downlink=make_compressor(config.compressor["downlink"]),
        local_workers=transport.local_workers,
        is_master=transport.is_master,
        seed=seed,
        batch=config.data["batch"],
        aggregation=config.compressor["aggregation"],
        packet_values=config.compressor["packet_values"],
        switch_format=config.compressor["switch_format"],
        log_every=config.run["log_every"],
        rounds=config.run["rounds"],
        start=start,
    )
    return method_class(config.method["name"])(ctx, config.method_options())


def _stop_code(config: Config, row: dict[str, float], loss0: float) -> tuple[int, str]:
    run, rounds = config.run, row["round"]
    if not np.isfinite(row["loss"]) or row["loss"] > run["divergence_factor"] * max(abs(loss0), 1e-300):
        return DIVERGED, f"loss {row['loss']:.6g} after round {rounds} (initial {loss0:.6g})"
    if run["target_suboptimality"] > 0 and row.get("suboptimality", np.nan) <= run["target_suboptimality"]:
        return STOPPED, f"target suboptimality {run['target_suboptimality']:g} reached after round {rounds}"
    if run["bit_budget"] > 0 and row["bits_up"] + row["bits_down"] >= run["bit_budget"]:
        return STOPPED, f"bit budget {run['bit_budget']:g} exhausted after round {rounds}"
    return CONTINUE, ""


def _prefixed(section: str, exc: Exception) -> str:
    """``"[section]: message"`` unless the message already names its config section."""
    message = str(exc)
    return message if message.startswith("[") else f"{section}: {message}"


def _spread(counts: np.ndarray) -> str:
    """``"min-max (mean m)"`` of per-worker counts, for the debug log."""
    return f"{int(counts.min())}-{int(counts.max())} (mean {counts.mean():.1f})"


def replica_digest(x: np.ndarray) -> bytes:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).digest()[:16]


References = tuple[tuple[np.ndarray, float] | None, tuple[np.ndarray, np.ndarray] | None]


def _references(config: Config, problem: Problem, kind: str) -> References:
    """Collective (every rank): an optimizer's reference optimum (``[run] optimum``) and a sampler's
    reference posterior; the master's values are the ones used."""
    optimum = posterior = None
    if config.run["optimum"] and kind == OPTIMIZER:
        log.info("reference optimum (scipy L-BFGS; cached after the first run; [run] optimum = false skips it)")
        optimum = problem.optimum()
    if kind == SAMPLER:
        posterior = problem.posterior()
    return optimum, posterior


def _worker_share(method: Method) -> None:
    """A non-master rank's part in a logged row: its workers' share of the metrics (collective)."""
    evaluate(method.problem, method.x, method.kind, None)


class _Monitor:
    """The master's side of the loop: the record, stop rules, the results file, the progress bar."""

    def __init__(
        self,
        config: Config,
        method: Method,
        references: References,
        writer: ResultsWriter,
        counter: ByteCounter,
        clock: Stopwatch,
        progress: tuple[bool, bool],
    ) -> None:
        self.config, self.method, self.writer, self.counter = config, method, writer, counter
        self.writer_config = config_json(config.as_dict())
        self.problem = method.problem
        self.optimum, posterior = references
        self.posterior = PosteriorTracker(self.problem.d, posterior) if method.kind == SAMPLER else None
        self.network = NetworkModel(**config.network)
        self.modelled_time = 0.0
        self.loss0 = self._evaluate()["loss"]
        self.last: dict[str, float] = {}
        enabled, bar = progress
        self.progress = Progress(config.run["rounds"], enabled, bar=bar)
        self.round_seconds = 0.0  # wall time spent in rounds; metric evaluation and logging excluded
        self.codec_start, self.comm_start = CODEC.seconds, clock.seconds
        self.clock = clock
        self.mark = time.perf_counter()
        self.debug_mark = (self.mark, CODEC.seconds, clock.seconds)  # -v: the previous round's end

    def _evaluate(self) -> dict[str, float]:
        """The kind's metrics at the current x (collective: the other ranks run :func:`_worker_share`)."""
        row = evaluate(self.problem, self.method.x, self.method.kind, self.optimum)
        assert row is not None, "the monitor runs on the master, which gets the metrics"
        return row

    def end_round(self, round_bytes: RoundBytes, k: int, logged: bool) -> tuple[int, str]:
        self.modelled_time += self.network.round_seconds(
            round_bytes.up_bytes, round_bytes.down_bytes, round_bytes.switch_packets
        )
        self.progress.update()
        if log.isEnabledFor(logging.DEBUG):
            self._debug_round(round_bytes, k)
        if self.posterior is not None and _keeps_sample(self.config, k):
            draw = self.method.sample()
            self.writer.add_samples(draw)
            self.posterior.add(draw)
        if not logged:
            return CONTINUE, ""
        self.round_seconds += time.perf_counter() - self.mark
        self.last = self._log_row(k)
        self.mark = time.perf_counter()
        bits = self.last["bits_up"] + self.last["bits_down"]
        self.progress.note(loss=f"{self.last['loss']:.4e}", Mbit=f"{bits / 1e6:.1f}")
        return _stop_code(self.config, self.last, self.loss0)

    def _debug_round(self, round_bytes: RoundBytes, k: int) -> None:
        """``-v``: the round's time on the master, split into codec and communication, and its traffic."""
        now, codec, comm = time.perf_counter(), CODEC.seconds, self.clock.seconds
        start, codec_start, comm_start = self.debug_mark
        self.debug_mark = (now, codec, comm)
        log.debug(
            "round %d: %.2f ms with its metrics (codec %.2f ms, communication %.2f ms); uplink %d uploads, %d skipped, %d bytes "
            "(payload %d, headers %d, control %d); downlink %d bytes",
            k + 1,
            1e3 * (now - start),
            1e3 * (codec - codec_start),
            1e3 * (comm - comm_start),
            int(round_bytes.uploads.sum()),
            int(round_bytes.skips.sum()),
            int(round_bytes.up_bytes.sum()),
            round_bytes.up_payload,
            round_bytes.up_header,
            round_bytes.up_control,
            round_bytes.down_payload + round_bytes.down_header + round_bytes.down_control,
        )

    def _log_row(self, k: int) -> dict[str, float]:
        """The kind's metrics at the current x, the method's own columns, the cumulative counted bytes."""
        totals, workers = communication(self.counter.totals)
        row = {"round": k + 1, **self._evaluate(), **totals, **self.method.metrics()}
        if self.posterior is not None:
            row.update(self.posterior.columns())
        row.update(
            wall_time=self.round_seconds,
            codec_time=CODEC.seconds - self.codec_start,
            comm_time=self.clock.seconds - self.comm_start,
            modelled_time=self.modelled_time,
        )
        self.writer.log(row, workers)
        return row

    def close(self) -> None:
        self.progress.close()

    def _run_values(self) -> dict:
        """What the monitor carries from round to round, as a tree :func:`state.flatten` takes."""
        totals = self.counter.totals
        values = {
            "loss0": self.loss0,
            "modelled_time": self.modelled_time,
            "wall_time": self.round_seconds + (time.perf_counter() - self.mark),
            "codec_time": CODEC.seconds - self.codec_start,
            "comm_time": self.clock.seconds - self.comm_start,
            "counter": {f.name: getattr(totals, f.name) for f in fields(totals) if f.name != "complete"},
        }
        if self.posterior is not None:
            values["posterior"] = self.posterior
        return values

    def checkpoint_state(self, rounds: int) -> tuple[dict[str, np.ndarray], dict[str, object]]:
        """The ``/run`` state after ``rounds`` rounds (the results file flushed first) and the
        checkpoint's attributes."""
        self.writer.flush()
        metric_rows, sample_rows = self.writer.rows
        attrs: dict[str, object] = {"round": rounds, "metric_rows": metric_rows, "sample_rows": sample_rows}
        attrs["config"] = self.writer_config
        return flatten_items(self._run_values()), attrs

    def resume_from(self, state: dict[str, np.ndarray]) -> None:
        """Put back what :meth:`checkpoint_state` saved (after the method's own state)."""
        values = restore_items(self._run_values(), state)
        self.loss0, self.modelled_time, self.round_seconds = (
            values["loss0"],
            values["modelled_time"],
            values["wall_time"],
        )
        self.codec_start = CODEC.seconds - values["codec_time"]
        self.comm_start = self.clock.seconds - values["comm_time"]
        counts: dict[str, Any] = {name: int(v) if np.ndim(v) == 0 else v for name, v in values["counter"].items()}
        self.counter.totals = RoundBytes(**counts, complete=self.counter.complete)
        self.mark = time.perf_counter()


def _keeps_sample(config: Config, k: int) -> bool:
    """Round ``k``'s draw goes to ``/samples``: past ``[run] burn_in`` rounds, every ``[run] thin``-th."""
    done, burn_in = k + 1, config.run["burn_in"]
    return done > burn_in and (done - burn_in) % config.run["thin"] == 0


def checkpoints_enabled(config: Config) -> bool:
    """``[run] checkpoint_every`` or ``checkpoint_seconds`` is on."""
    return config.run["checkpoint_every"] > 0 or config.run["checkpoint_seconds"] > 0


class _Checkpoints:
    """When to write a checkpoint and how (every rank holds one; the master decides, the agree tells).

    Due every ``[run] checkpoint_every`` rounds, or when ``[run] checkpoint_seconds`` passed since the
    last one, or when ``stop_request`` is set (a signal: the run then ends as ``resumable``), and at
    the end of a run that finished or stopped (so that it can be extended with more rounds).
    """

    def __init__(
        self,
        config: Config,
        out: Path,
        transport: Transport,
        method: Method,
        monitor: _Monitor | None,
        stop_request: threading.Event | None,
    ) -> None:
        self.every, self.seconds = config.run["checkpoint_every"], config.run["checkpoint_seconds"]
        self.out, self.transport, self.method, self.monitor = out, transport, method, monitor
        self.stop_request = stop_request
        self.last_time = time.monotonic()
        self.saved_round = -1

    def flags(self, k: int) -> int:
        """The master's :data:`SAVE` and :data:`SIGNALLED` flags after round ``k``."""
        signalled = self.stop_request is not None and self.stop_request.is_set()
        due = (self.every > 0 and (k + 1) % self.every == 0) or (
            self.seconds > 0 and time.monotonic() - self.last_time >= self.seconds
        )
        return (SAVE if due or signalled else 0) | (SIGNALLED if signalled else 0)

    def save(self, rounds: int) -> str:
        """Collective: the checkpoint after ``rounds`` rounds (skipped if that one exists). On the master,
        why it could not be written (a file error: the run may go on, the last complete checkpoint stays), else
        ``""``; the other ranks do not know and return ``""``."""
        if rounds == self.saved_round:
            return ""
        started = time.perf_counter()
        run_state, attrs = self.monitor.checkpoint_state(rounds) if self.monitor is not None else (None, None)
        try:
            write_checkpoint(self.out, self.transport, self.method, run_state, attrs)
        except CheckpointError as exc:
            self.last_time = time.monotonic()  # checkpoint_seconds: the next try a period later, not every round
            return str(exc)
        self.last_time, self.saved_round = time.monotonic(), rounds
        if self.monitor is not None:
            log.info("checkpoint after round %d (%.2f s)", rounds, time.perf_counter() - started)
        return ""


def run(
    config: Config,
    out: str | Path,
    *,
    overwrite: bool = False,
    progress: bool = True,
    progress_bar: bool = True,
    transport: Transport | None = None,
    signals: SignalWatch | None = None,
    resume: Resume | None = None,
    stop_request: threading.Event | None = None,
    between_rounds: Callable[[], None] | None = None,
) -> RunResult:
    """Run one experiment; rank 0 writes ``out``. Returns the final status on every rank.

    ``progress``: rank 0 reports progress, as a bar on a terminal (unless ``progress_bar`` is off)
    and as plain log lines elsewhere.

    ``signals`` (MPI runs): rank 0 hands it the writer's failure recorder, so that a signal on any
    rank is recorded in ``out`` before the job is aborted. ``resume``: continue the run in ``out``
    from that checkpoint (validated by :func:`mpicomp.checkpoint.plan_resume`). ``stop_request`` (set by
    a signal handler, read by rank 0): write a checkpoint after the current round and end as
    ``resumable``. ``between_rounds`` is called before every round and may raise to end the run
    (the CLI's, in a single-process run: a signal whose ``SystemExit`` was lost, see ``mpicomp.cli``).
    """
    with threadpool_limits(limits=config.run["threads"]), message_checksums(config.compressor["checksum"]):
        if transport is not None:
            return _run(
                config,
                Path(out),
                overwrite,
                (progress, progress_bar),
                transport,
                signals,
                resume,
                stop_request,
                between_rounds,
            )
        with make_transport(
            config.data["workers"], wait=config.run["wait"], master_share=config.run["master_share"]
        ) as own:
            return _run(
                config,
                Path(out),
                overwrite,
                (progress, progress_bar),
                own,
                signals,
                resume,
                stop_request,
                between_rounds,
            )


def _run(
    config: Config,
    out: Path,
    overwrite: bool,
    progress: tuple[bool, bool],
    transport: Transport,
    signals: SignalWatch | None,
    resume: Resume | None,
    stop_request: threading.Event | None,
    between_rounds: Callable[[], None] | None,
) -> RunResult:
    started = time.perf_counter()
    seed = root_seed(config.run["seed"])
    try:
        problem = build_problem_from(config, seed, transport)
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(_prefixed("[problem]/[data]", exc)) from exc
    try:
        x0 = initial_point(problem, config.problem["init"], config.problem["init_scale"], seed)
    except ValueError as exc:
        raise ConfigError(_prefixed("[problem] init", exc)) from exc
    try:
        method = build_method(config, problem, transport, seed, x0)
    except ValueError as exc:
        raise ConfigError(_prefixed("[method]", exc)) from exc
    method.warm_up()
    if config.compressor["aggregation"] == "switch":
        warm_up_packets()
    run_state = load_checkpoint(resume.checkpoint, method, transport.local_workers) if resume is not None else None
    start = 0 if resume is None else resume.round
    if not transport.is_master:
        _references(config, problem, method.kind)
        _worker_share(method)  # the initial loss
        checkpoints = _Checkpoints(config, out, transport, method, None, None) if checkpoints_enabled(config) else None
        return _loop(config, transport, method, None, checkpoints, start, between_rounds)
    log.info("%s", transport.layout_summary())
    log.info("%s", vector_width_summary())
    log.info(
        "method %s, stepsize %.4g, uplink %s, downlink %s",
        method.name,
        method.stepsize,
        method.ctx.uplink.spec,
        method.ctx.downlink.spec,
    )
    log.debug(
        "exchange: %s; uplink %s (%s), downlink %s; %d coordinates; worker shards %s samples",
        "per round, the uploads go to rank 0 (Gatherv) and its downlink to every rank (Bcast)"
        if config.compressor["aggregation"] == "gather"
        else "per round, worker integer vectors are summed by the emulated switch on rank 0 and multicast",
        method.ctx.uplink.spec,
        f"about {method.ctx.uplink.expected_bits(problem.d) / problem.d:.3g} bits/coordinate",
        method.ctx.downlink.spec,
        problem.d,
        _spread(problem.sample_counts()),
    )
    with ResultsWriter(
        out,
        config=config.as_dict(),
        metrics=dtypes(metric_columns(method)),
        worker_metrics=dtypes(WORKER_COLUMNS),
        n_workers=problem.n_workers,
        d=problem.d,
        sample_dim=problem.d if method.kind == SAMPLER else None,
        mpi_size=transport.size,
        flush_every=config.run["flush_every"],
        overwrite=overwrite or resume is not None,
        carry=None if resume is None else (out, resume.metric_rows, resume.sample_rows),  # rows up to the checkpoint
    ) as writer:
        if resume is not None:
            log.info("resuming %s after round %d from %s", out, resume.round, resume.checkpoint)
        else:  # an overwritten run's checkpoints belong to the old run
            for stale in checkpoint_paths(out):
                stale.unlink(missing_ok=True)
        if signals is not None:
            signals.attach(writer.record_failure)
        references = _references(config, problem, method.kind)
        monitor = _Monitor(config, method, references, writer, transport.counter, transport.clock, progress)
        if run_state is not None:
            monitor.resume_from(run_state)
        checkpoints = (
            _Checkpoints(config, out, transport, method, monitor, stop_request) if checkpoints_enabled(config) else None
        )
        startup = time.perf_counter() - started
        writer.record_startup(startup)
        log.info("start-up %.1f s (data, reference optimum, JIT compilation); round %d starts", startup, start + 1)
        try:
            result = _loop(config, transport, method, monitor, checkpoints, start, between_rounds)
        finally:
            monitor.close()
        writer.finish(result.status, result.message, final_x=method.x)
    level = logging.WARNING if result.status == "diverged" else logging.INFO
    log.log(level, "%s after %d rounds: %s", result.status, result.rounds, result.message)
    return result


class _FloatingPointNotice:
    """NumPy's floating-point errors (overflow, invalid, divide) during the rounds, said once in a log
    line on the master instead of a RuntimeWarning per operation and rank: a diverging run's iterates
    overflow before its stop rule (``[run] divergence_factor``, a non-finite model) ends it."""

    def __init__(self, speaks: bool) -> None:
        self.speaks, self.said, self.round = speaks, False, 0

    def __call__(self, kind: str, flag: int) -> None:
        if self.speaks and not self.said:
            self.said = True
            log.warning("floating-point %s in round %d: the iterates are growing (diverging?)", kind, self.round)


def _loop(
    config: Config,
    transport: Transport,
    method: Method,
    monitor: _Monitor | None,
    checkpoints: _Checkpoints | None,
    start: int = 0,
    between_rounds: Callable[[], None] | None = None,
) -> RunResult:
    """The rounds (:func:`_rounds`), with NumPy's floating-point errors turned into one log line."""
    notice = _FloatingPointNotice(monitor is not None)
    started, idle = time.perf_counter(), transport.idle.seconds
    with np.errstate(over="call", invalid="call", divide="call", call=notice):
        result = _rounds(config, transport, method, monitor, checkpoints, start, notice, between_rounds)
    _report_rank_load(transport, time.perf_counter() - started - (transport.idle.seconds - idle), result.rounds - start)
    return result


def _report_rank_load(transport: Transport, busy: float, rounds: int) -> None:
    """Every rank's seconds of work in the rounds (not waiting for a collective) to the master, whose
    log says them (``-v``) and, when rank 0 (its workers and the master) was the slowest by more than
    10 %, the ``[run] master_share`` that would even the ranks out."""
    if transport.size == 1 or rounds <= 0:
        return
    loads = transport.gather_rank_values(np.array([busy, len(transport.local_workers)]))
    if loads is None:
        return
    per_round = loads[:, 0] / rounds
    log.debug("busy ms a round per rank: %s", ", ".join(f"{1e3 * t:.3g}" for t in per_round))
    share = balanced_master_share(loads[:, 0], loads[:, 1])
    if share is not None and share < transport.master_share - 0.05 and per_round[0] > 1.1 * per_round[1:].max():
        log.info(
            "rank 0 (workers and master) was busy %.3g ms a round, the busiest other rank %.3g ms: "
            "[run] master_share = %.2f would even them out (results do not change)",
            1e3 * per_round[0],
            1e3 * per_round[1:].max(),
            share,
        )


def _rounds(
    config: Config,
    transport: Transport,
    method: Method,
    monitor: _Monitor | None,
    checkpoints: _Checkpoints | None,
    start: int,
    notice: _FloatingPointNotice,
    between_rounds: Callable[[], None] | None,
) -> RunResult:
    """Rounds ``start`` to ``[run] rounds``, identical on every rank; only the master has a monitor.

    Non-finite model entries are detected on every rank at once (replicas are identical), so every
    rank knows when the master evaluates the metrics and takes its share; the master's stop rules
    reach the other ranks through ``transport.agree`` on logged rounds, and with checkpoints on
    after every round (with the checkpoint flags).
    """
    rounds, log_every = config.run["rounds"], config.run["log_every"]
    code, message, k = FINISHED, f"{rounds} rounds done", start - 1
    for k in range(start, rounds):
        if between_rounds is not None:
            between_rounds()
        notice.round = k + 1
        try:
            method.round(k, transport)
        except AggregationOverflowError as exc:
            raise AggregationOverflowError(f"round {k + 1}: {exc}") from None
        round_bytes = transport.counter.end_round()
        logged = (k + 1) % log_every == 0 or k + 1 == rounds
        finite = bool(np.isfinite(method.x).all())
        if (k + 1) % config.run["check_every"] == 0 and not transport.all_equal(replica_digest(method.x)):
            raise RuntimeError(
                f"model replicas differ across ranks after round {k + 1}: the method is not rank-independent"
            )
        step_code, step_message = CONTINUE, ""
        if monitor is not None:
            step_code, step_message = monitor.end_round(round_bytes, k, logged or not finite)
        elif logged or not finite:
            _worker_share(method)
        if not finite:
            code, message = DIVERGED, f"non-finite model after round {k + 1}"
            break
        if checkpoints is not None:  # every rank leaves, and checkpoints, with the master's decision
            agreed = transport.agree(step_code | checkpoints.flags(k) if monitor else None)
            step_code = agreed & CODE_MASK
            failure = checkpoints.save(k + 1) if agreed & SAVE else ""
            if agreed & SIGNALLED:
                written = None if monitor is None else int(not failure)  # the master's word, which every rank gets
                if not transport.agree(written):  # every rank raises alike: one line, no rank left waiting
                    reason = failure or "the master could not write the checkpoint"
                    raise CheckpointError(f"stopped by a signal after round {k + 1}, but {reason}")
                code, message = SUSPENDED, f"stopped by a signal after round {k + 1}, checkpoint written; resume with"
                message += f" `mpicomp run --resume {checkpoints.out}`"
                break
            if failure:
                log.warning("%s; the run goes on (a resume starts from the last checkpoint written)", failure)
        elif logged:
            step_code = transport.agree(step_code if monitor else None)
        if step_code != CONTINUE:
            code, message = step_code, step_message
            break
    if checkpoints is not None and code in (FINISHED, STOPPED) and (failure := checkpoints.save(k + 1)):
        log.warning("%s; the results are complete, but extending the run (--resume) needs a checkpoint", failure)
    return RunResult(STATUS[code], message, k + 1, method.x, monitor.last if monitor else {})
