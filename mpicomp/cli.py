"""Command line: ``mpicomp run | sweep | reproduce | info | compare | plot | export | data | compressors | methods``.

Launch with ``mpiexec -n 4 mpicomp run CONFIG.toml`` or ``srun mpicomp run ...``; a plain
``mpicomp run`` (or ``python -m mpicomp run``) runs every logical worker in one process
and writes the same metrics.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from . import __version__
from .reproduce.command import add_parser as add_reproduce_parser

if TYPE_CHECKING:
    from .checkpoint import Resume
    from .comm.signals import SignalWatch
    from .config import Config

log = logging.getLogger("mpicomp")
EXIT_RESUMABLE = 3  # `mpicomp run` ended by a signal after writing a checkpoint: continue with --resume
ABORT_DELAY_SECONDS = 0.5  # between a failing rank's error line and its MPI_Abort (see _abort_others)


def _rank() -> tuple[int, int]:
    from mpi4py import MPI

    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted (tests and notebooks replace it)."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        """Ignored: the stream is always the current ``sys.stderr``."""


def setup_logging(rank: int, verbosity: int) -> None:
    """mpicomp's own logger: rank 0 at INFO (DEBUG with -v), other ranks and -q warnings and errors only.

    Only the ``mpicomp`` logger is configured, so -v never turns on third-party debug output.
    """
    level = logging.DEBUG if verbosity > 0 else logging.INFO
    if verbosity < 0 or rank != 0:
        level = logging.WARNING
    handler = _StderrHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s [rank {rank}] %(levelname)s %(message)s", "%H:%M:%S"))
    log.handlers[:] = [handler]
    log.setLevel(level)
    log.propagate = False


def check_out(out: Path, overwrite: bool) -> str:
    """Why ``out`` cannot receive the results (``""`` if it can); creates its folder."""
    from .results.guard import in_use

    if out.is_dir():
        return f"--out {out} is a directory; give a file path, e.g. {out / 'run.h5'}"
    if out.exists() and not overwrite:
        return f"{out} exists; pass --overwrite or choose another --out"
    if out.exists() and (reason := in_use(out)):
        return f"not overwriting: {reason}, or choose another --out"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot create the folder of --out {out}: {exc.strerror or exc}"
    try:
        with tempfile.TemporaryFile(dir=out.parent, prefix=f".{out.name}."):
            pass
    except OSError as exc:
        return f"cannot create files in {out.parent} ({exc.strerror or exc}); choose another --out"
    return ""


def _cmd_run(args: argparse.Namespace) -> int:
    rank, size = _rank()
    setup_logging(rank, args.verbose - args.quiet)
    if size == 1:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        signal.signal(signal.SIGUSR1, _exit_on_sigterm)
        try:
            return _run_command(args, rank, size, None)
        finally:
            _signal_exit.reset()  # a later run in this process starts afresh
    from .comm.signals import SignalWatch

    try:
        watch = SignalWatch()
    except RuntimeError as exc:
        log.warning("%s; Ctrl-C may leave ranks waiting and the results file saying 'running'", exc)
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        signal.signal(signal.SIGUSR1, _exit_on_sigterm)
        return _run_command(args, rank, size, None)
    try:
        return _run_command(args, rank, size, watch)
    finally:
        watch.close()


def _resume_plan(args: argparse.Namespace, rank: int, size: int) -> tuple[Config, Resume] | str:
    """``(config, Resume)`` for ``--resume FILE`` on every rank, checked by rank 0 alone (read-only), or
    the one-line reason it cannot be resumed."""
    from .checkpoint import CheckpointError, plan_resume
    from .config import ConfigError

    if args.config or args.out or args.overwrite:
        return "--resume FILE continues FILE with its own config: drop CONFIG, --out and --overwrite"
    plan: tuple[Config, Resume] | str = ""
    if rank == 0:
        try:
            plan = plan_resume(args.resume, args.set)
        except (CheckpointError, ConfigError) as exc:
            plan = f"cannot resume: {exc}"
        except Exception as exc:  # noqa: BLE001 - a file nobody foresaw: the other ranks wait for the reason
            plan = f"cannot resume {args.resume}: {type(exc).__name__}: {exc} (a damaged results or checkpoint file?)"
    if size > 1:
        from mpi4py import MPI

        plan = MPI.COMM_WORLD.bcast(plan, root=0)
    return plan


def _run_command(args: argparse.Namespace, rank: int, size: int, watch: SignalWatch | None) -> int:
    """``mpicomp run`` after the signal set-up; ``watch`` is the MPI runs' SignalWatch."""
    from .config import ConfigError, load

    resume = None
    if args.resume:
        plan = _resume_plan(args, rank, size)
        if isinstance(plan, str):  # every rank has the same reason (rank 0's, broadcast)
            if rank == 0:
                print(f"mpicomp: {plan}", file=sys.stderr)
            return 2
        config, resume = plan
        out = Path(args.resume)
    else:
        try:
            config = load(args.config, args.set)
        except ConfigError as exc:
            return _end_failed(str(exc), 2, rank, size, watch, "config error: ")
        out = Path(args.out) if args.out else Path("results") / f"{Path(args.config).stem if args.config else 'run'}.h5"
    problem = check_out(out, args.overwrite) if rank == 0 and resume is None else ""
    if problem:  # rank 0 alone knows: take the other ranks down before they wait in a collective
        print(f"mpicomp: {problem}", file=sys.stderr)
        _abort_others(size, 2)
        return 2
    from .checkpoint import CheckpointError
    from .comm import AggregationOverflowError, LauncherMismatch
    from .results.writer import RESUMABLE, RunEnded, failure_message
    from .runner import run
    from .wire import MessageError

    stop_request = _checkpoint_on_signal(config, watch)
    try:
        result = run(
            config,
            out,
            overwrite=args.overwrite,
            progress=rank == 0 and args.quiet == 0,
            progress_bar=not args.no_progress,
            signals=watch,
            resume=resume,
            stop_request=stop_request,
            between_rounds=_signal_exit.between_rounds if size == 1 else None,  # ranks would part ways
        )
    except LauncherMismatch as exc:  # every process is its own size-1 world: each says so, in one line
        print(f"mpicomp: {exc}", file=sys.stderr)
        return 2
    except RunEnded:  # a signal's thread recorded why in the results file and is ending the job: say nothing
        return 1
    except (KeyboardInterrupt, SystemExit) as exc:  # a single-process run's Ctrl-C or SIGTERM
        return _end_failed(f"{failure_message(exc)}; results so far in {out}", 1, rank, size, watch)
    except (ConfigError, FileExistsError) as exc:
        return _end_failed(str(exc), 2, rank, size, watch)
    except (AggregationOverflowError, CheckpointError, MessageError, OSError, FloatingPointError, MemoryError) as exc:
        return _end_failed(failure_message(exc), 1, rank, size, watch, "run failed: ")
    except Exception as exc:  # most likely a defect: the traceback is one -v away
        if args.verbose:
            traceback.print_exc()
        hint = "" if args.verbose else " (-v prints the traceback)"
        return _end_failed(failure_message(exc), 1, rank, size, watch, "run failed: ", hint)
    if rank == 0:
        print(f"{result.status}: {result.message}; results in {out}")
    return EXIT_RESUMABLE if result.status == RESUMABLE else 0


def _checkpoint_on_signal(config: Config, watch: SignalWatch | None) -> threading.Event | None:
    """With checkpoints on, the event the first SIGTERM or SIGUSR1 sets (the run then checkpoints and
    ends as ``resumable``): through the MPI runs' watch, else Python handlers (a second signal exits)."""
    from .comm.signals import REPEAT_SECONDS
    from .runner import checkpoints_enabled

    if not checkpoints_enabled(config):
        if watch is not None:
            watch.checkpoints_off()
        return None
    request = threading.Event()
    if watch is not None:
        watch.enable_checkpoints(request)
        return request

    requested_at: list[float] = []

    def handler(signum: int, frame: object) -> None:
        if request.is_set() and time.monotonic() - requested_at[0] >= REPEAT_SECONDS:
            _exit_on_sigterm(signum, frame)
        if not request.is_set():
            requested_at.append(time.monotonic())
            request.set()

    for signum in (signal.SIGTERM, signal.SIGUSR1):
        signal.signal(signum, handler)
    return request


def _end_failed(
    reason: str, code: int, rank: int, size: int, watch: SignalWatch | None, label: str = "", hint: str = ""
) -> int:
    """One line for an error (``label``, ``reason``, ``hint``; ``reason`` alone goes to the results
    file), and no rank left waiting.

    If every rank met an error (an invalid option, a diverged aggregate: every rank computes the
    same), rank 0 says it once and every rank returns ``code``. If only some did (a file missing
    on one node, a shard that overflows on one rank), the failing rank says so naming itself, hands
    the reason to rank 0 (which records it in the results file) and the job is aborted.
    """
    if size == 1 or (watch is not None and watch.all_failed()):
        if rank == 0:
            print(f"mpicomp: {label}{reason}{hint}", file=sys.stderr)
        return code
    print(f"mpicomp: rank {rank}: {label}{reason}{hint}", file=sys.stderr, flush=True)
    if watch is not None and rank != 0:
        watch.report(reason, code)  # rank 0 records "rank r: reason" and aborts the job
    _abort_others(size, code)
    return code


class _SignalExit:
    """SLURM's time limit sends SIGTERM: a single-process run without checkpoints leaves through
    SystemExit, so that the results file says "failed". Before the rounds, :meth:`handler` raises it at
    once; once they run it only records the signal and :meth:`between_rounds` raises it before the
    next round. An exception raised by a signal handler that lands in a weakref callback or a
    ``__del__`` is printed ("Exception ignored ...") and dropped by Python, and the run went on."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.in_rounds = False

    def handler(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        if not self.in_rounds:
            sys.exit(128 + signum)

    def between_rounds(self) -> None:
        self.in_rounds = True
        if self.signals:
            sys.exit(128 + self.signals[0])

    def reset(self) -> None:
        self.signals.clear()
        self.in_rounds = False


_signal_exit = _SignalExit()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    """The signal handler of :class:`_SignalExit`."""
    _signal_exit.handler(signum, frame)


def _abort_others(size: int, code: int) -> None:
    """A rank that cannot continue takes the whole job down instead of leaving peers hanging.

    It first waits ``ABORT_DELAY_SECONDS``: the launcher forwards the rank's stderr from a pipe, and
    an abort that reaches it before it has read the pipe drops the error line just written (seen
    under load with MPICH's mpiexec: an empty stderr)."""
    if size > 1:
        from mpi4py import MPI

        time.sleep(ABORT_DELAY_SECONDS)
        MPI.COMM_WORLD.Abort(code)


def _cmd_info(args: argparse.Namespace) -> int:
    from .results import RunsError, find_results, summarize
    from .results.guard import in_use
    from .results.repair import needs_repair

    notes: list[str] = []
    try:
        paths = find_results(args.results, notes)
    except RunsError as exc:
        print(f"mpicomp: info: {exc}", file=sys.stderr)
        return 2
    for note in notes:
        _note(note)
    for path in paths:
        try:
            text = summarize(path)
        except (OSError, KeyError, ValueError) as exc:
            print(f"mpicomp: cannot read {path}: {exc}", file=sys.stderr)
            return 2
        if needs_repair(path) and not in_use(path):
            text += (
                "\nnote: the writer was killed before closing the file, so plain HDF5 readers refuse it "
                f"(h5py.File(path, 'r'): 'file is already open for write'); `mpicomp repair {path}` clears that"
            )
        print(text, flush=True)
    return 0


def _cmd_repair(args: argparse.Namespace) -> int:
    from .results.repair import repair

    for path in args.results:
        try:
            repaired = repair(path)
        except (OSError, ValueError) as exc:
            print(f"mpicomp: repair: {exc}", file=sys.stderr)
            return 2
        print(f"{path}: {'repaired: any HDF5 reader opens it now' if repaired else 'nothing to repair'}")
    return 0


def _note(message: str) -> None:
    print(f"mpicomp: note: {message}", file=sys.stderr)


def _cmd_compare(args: argparse.Namespace) -> int:
    from .results.collect import RunsError, load_runs
    from .results.compare import (
        Target,
        compare_runs,
        sort_rows,
        to_csv,
        to_json,
        to_text,
    )

    try:
        targets = [Target.parse(text) for text in args.target]
        runs, skipped = load_runs(args.runs)
        comparison = compare_runs(runs, targets, args.metric, group_seeds=args.group_seeds)
        if args.sort:
            sort_rows(comparison, args.sort, reverse=args.reverse)
    except (RunsError, ValueError) as exc:
        print(f"mpicomp: compare: {exc}", file=sys.stderr)
        return 2
    comparison.notes[:0] = skipped
    if args.json:
        print(to_json(comparison))
    elif args.csv:
        print(to_csv(comparison), end="")
        for note in comparison.notes:
            _note(note)
    else:
        print(to_text(comparison))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from .results.collect import RunsError, check_metrics, load_runs
    from .results.plot import check_output, figure, run_labels, save

    try:
        out = check_output(args.out or default_figure_path(args.runs))
        runs, notes = load_runs(args.runs)
        check_metrics(runs, args.y or ["loss"], "--y")
    except (RunsError, ValueError) as exc:
        print(f"mpicomp: plot: {exc}", file=sys.stderr)
        return 2
    try:
        fig, drawn = figure(
            list(zip(run_labels(runs), runs, strict=True)),
            args.y or ["loss"],
            args.x or ["rounds"],
            yscale=args.yscale,
            xscale=args.xscale,
            title=args.title,
        )
    except ImportError as exc:
        print(f"mpicomp: plot: {exc}", file=sys.stderr)
        return 1
    for note in notes + drawn:
        _note(note)
    print(f"wrote {save(fig, out)} ({len(runs)} runs)")
    return 0


def default_figure_path(runs: list[str]) -> Path:
    """``mpicomp plot``'s figure without ``--out``: a PNG named after the first RUNS argument, beside it
    (``nat.h5`` -> ``nat.png``, ``results/sweep`` -> ``results/sweep.png``; a glob -> ``plot.png``)."""
    first = runs[0]
    if any(char in first for char in "*?["):
        return Path("plot.png")
    source = Path(first).resolve()
    return source.with_suffix(".png") if source.is_file() else source.parent / f"{source.name}.png"


def _cmd_sweep(args: argparse.Namespace) -> int:
    from .config import ConfigError
    from .launch import LauncherNotFound
    from .sweep import describe, load_sweep
    from .sweep_runner import run_points

    try:
        sweep = load_sweep(args.sweep)
    except ConfigError as exc:
        print(f"mpicomp: sweep: {exc}", file=sys.stderr)
        return 2
    if args.count:
        print(len(sweep.points))
        return 0
    if args.out is None:
        print("mpicomp: sweep: give --out DIR, the folder of the sweep's results", file=sys.stderr)
        return 2
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        print(f"mpicomp: sweep: --out {out} is a file; give a folder", file=sys.stderr)
        return 2
    task = args.array_index if args.array_index is not None else os.environ.get("SLURM_ARRAY_TASK_ID")
    only = None
    if task is not None:
        last = len(sweep.points) - 1
        if not str(task).isdigit() or int(task) > last:
            print(f"mpicomp: sweep: array index {task} is not a point of {args.sweep}; use 0-{last}", file=sys.stderr)
            return 2
        only = [int(task)]
    if args.dry_run:
        print(describe(sweep, out, only))
        return 0
    try:
        return run_points(sweep, out, ranks=args.ranks, parallel=args.parallel, only=only, echo=_stamped)
    except LauncherNotFound as exc:
        print(f"mpicomp: sweep: {exc}", file=sys.stderr)
        return 2


def _stamped(line: str) -> None:
    """A sweep log line, with the time, on stdout at once."""
    import time

    print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)


def _cmd_export(args: argparse.Namespace) -> int:
    from .results import RunsError, tidy_table
    from .results.export import export_csv, export_parquet

    try:
        table = tidy_table(args.runs, config=args.config)
    except (RunsError, OSError, ValueError) as exc:
        print(f"mpicomp: export: {exc}", file=sys.stderr)
        return 2
    try:
        if args.csv:
            export_csv(table, args.csv)
        else:
            export_parquet(table, args.parquet)
    except ImportError as exc:
        print(f"mpicomp: export: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mpicomp: export: cannot write {args.csv or args.parquet}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if args.csv != "-":
        runs = len(set(table["run"].tolist()))
        print(f"wrote {args.csv or args.parquet}: {len(table['run'])} rows of {runs} runs, {len(table)} columns")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from .data.fetch import CACHE_ENV, KNOWN, FetchError, data_home, fetch, listing

    home = Path(args.dir) if args.dir else None
    if args.action == "list":
        print(listing(home))
        return 0
    try:
        fetch(args.name, home, args.mirror)
    except FetchError as exc:
        print(f"mpicomp: data fetch: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"mpicomp: data fetch: cannot write in {home or data_home()}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    hint = "" if home is None or home == data_home() else f"; export {CACHE_ENV}={home} so that configs find it"
    print(f"{args.name} is ready: dataset = {KNOWN[args.name].spec!r} in a config{hint}")
    return 0


EXAMPLE_SPECS = (
    "identity",
    "identity(dtype=float32)",
    "dither(s=4,p=2)",
    "dither(s=4,p=inf)",
    "natural",
    "natdither(s=4,p=2)",
    "natdither(s=4,p=inf)",
    "block(size=256)",
    "randk(k=0.01)",
    "topk(k=0.01)",
    "qsgd(s=16)",
    "terngrad",
    "sign",
    "laq(bits=8)",
    "natural∘randk(k=0.01)",
    "qsgd(s=4)∘topk(k=0.01)",
    "stovoq",
    "hsq(mode=span)",
    "cross-polytope",
)


def compressor_table(d: int) -> str:
    """One row per example spec (and per registered compressor they miss): kind, omega or alpha
    at dimension d, bits per coordinate in theory (payload + framing), description."""
    from .compressors import available, make

    compressors = [make(spec) for spec in EXAMPLE_SPECS]
    shown = {c.name for c in compressors} | {getattr(c, "outer", c).name for c in compressors}
    rows = [("spec", "kind", f"omega/alpha at d={d}", "bits/coord", "description")]
    for c in compressors:
        if c.unbiased:
            bound = f"omega={c.omega(d):.4g}"
        else:
            alpha = c.alpha(d)
            bound = "-" if alpha is None else f"alpha={alpha:.4g}"
        bits = (c.expected_bits(d) + c.header_bits()) / d
        rows.append((c.spec, "unbiased" if c.unbiased else "contractive", bound, f"{bits:.4g}", _first_line(type(c))))
    for name, cls in available().items():
        if name not in shown:
            rows.append(
                (name, "unbiased" if cls.unbiased else "contractive", "(see its parameters)", "", _first_line(cls))
            )
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows)


def _first_line(obj) -> str:
    """The first docstring line, without reST literal markup, for terminal tables."""
    return (obj.__doc__ or "").strip().splitlines()[0].replace("``", "") if obj.__doc__ else ""


def plugin_lines(plugins: dict, what: str) -> list[str]:
    """The entry-point plugins of one group: name, package, target and first docstring line."""
    if not plugins:
        return []
    width = max(len(name) for name in plugins)
    lines = [f"\n{what} from plugins (entry points):"]
    lines += [f"{p.name:{width}s}  from {p.package}  ({p.target})  {_first_line(p.cls)}" for p in plugins.values()]
    return lines


def _cmd_compressors(args: argparse.Namespace) -> int:
    from .compressors.registry import plugins

    print("\n".join([compressor_table(args.d), *plugin_lines(plugins(), "compressors")]))
    return 0


def _cmd_methods(args: argparse.Namespace) -> int:
    import dataclasses

    from .methods import available_methods
    from .methods.base import plugins

    for name, cls in available_methods().items():
        options = ", ".join(f"{f.name}={f.default!r}" for f in dataclasses.fields(cls.Options))
        origin = f" [plugin from {plugins()[name].package}]" if name in plugins() else ""
        print(f"{name:14s} {_first_line(cls)}{origin}\n{'':14s} options: {options}")
    return 0


COMPARE_DESCRIPTION = """\
One row per run: the config keys that differ between the runs, status, last logged round, final
loss, suboptimality, gradient norm and test accuracy, bits up and down, uploads, modelled and wall
time, the final value of columns a method declared (a sampler's own metrics), and per --target
whether the run reached it and the round, bits (up + down), modelled and wall time at the first
logged row that meets it. Runs that lack a value (killed, another method or format, samplers)
show n/a and a note below the table.

examples:
  mpicomp compare results/sweep --target loss=0.3 --sort 'bits to loss<=0.3'
  mpicomp compare 'results/sweep/*.h5' --group-seeds --csv > sweep.csv"""
PLOT_DESCRIPTION = """\
Overlay the runs' curves: one panel per --y metric and --x axis, one legend whose labels are the
config keys that differ between the runs. The y axis is logarithmic for suboptimality, gradient
norm, distance to x* and metrics spanning two decades (--yscale to choose).

example:
  mpicomp plot results/sweep --y suboptimality --x rounds --x bits --out sweep.png"""
EXPORT_DESCRIPTION = """\
One row per logged round of every run: run (the file), status, the config flattened to section.key
columns, then every metric column (empty where a run lacks one). The same table as
mpicomp.results.tidy_table / to_dataframe in Python.

examples:
  mpicomp export results/sweeps/compressors --csv sweep.csv
  mpicomp export 'results/*.h5' --parquet runs.parquet --config differing"""
SWEEP_DESCRIPTION = """\
Run every point of a sweep file: a base config (relative to the sweep file), [set] overrides, a
[grid] of section.key axes, seeds (a list or a count) and extra [[point]] tables. Every point is
validated first; each writes DIR/<its differing values>.h5 (its output in DIR/logs/), and
DIR/sweep.json lists the points, their overrides, files and status. Finished points are skipped,
failed or killed ones run again: run the same command after an interruption.

examples:
  mpicomp sweep jobscripts/configs/sweep-compressors.toml --out results/sweeps/compressors -n 2
  mpicomp sweep SWEEP.toml --out DIR --dry-run
  sbatch --array=0-$(($(mpicomp sweep SWEEP.toml --count) - 1)) jobscripts/slurm_sweep.sh SWEEP.toml"""


def _runs_parser(sub, name: str, summary: str, description: str) -> argparse.ArgumentParser:
    """A subcommand that reads several results files: its parser with the ``RUNS`` argument."""
    p = sub.add_parser(
        name, help=summary, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "runs",
        nargs="+",
        metavar="RUNS",
        help="results files, directories (every *.h5 below them) or quoted glob patterns",
    )
    return p


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _cmd_compile(args: argparse.Namespace) -> int:
    import numba

    from ._vector_width import vector_width_summary
    from .jit import compile_kernels

    where = numba.config.CACHE_DIR or "__pycache__ folders beside mpicomp's modules"  # type: ignore[attr-defined]  # numba.config sets its options at import time, untyped
    print(f"compiling mpicomp's numba kernels (cache: {where}; set NUMBA_CACHE_DIR to move it)")
    print(f"{vector_width_summary()}; numba keeps its cache per CPU name and features")
    for what, seconds in compile_kernels(EXAMPLE_SPECS):
        print(f"  {what:32s} {seconds:6.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpicomp",
        description="Communication-compressed distributed optimization on MPI.",
        epilog="Examples:\n  mpicomp run jobscripts/configs/quickstart.toml\n"
        "  mpiexec -n 4 mpicomp run cfg.toml --set compressor.uplink='natural' --out nat.h5\n"
        "  mpicomp info nat.h5\n"
        "  mpicomp compare results/ --target loss=0.3\n"
        "  mpicomp plot results/ --y loss --x bits --out loss.png",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"mpicomp {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run an experiment from a TOML config", description="Run an experiment.")
    p.add_argument("config", nargs="?", help="TOML config file (defaults for every key if omitted)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override a config value (TOML syntax), e.g. --set run.rounds=50; repeatable",
    )
    p.add_argument("--out", help="HDF5 results file (default: results/<config name>.h5)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing results file")
    p.add_argument(
        "--resume",
        metavar="FILE",
        help="continue the run in results file FILE from its last checkpoint, with FILE's config (--set may "
        "change only run.rounds, the stop rules, the checkpoint keys and run.master_share); any number of ranks",
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar on a terminal: plain lines instead, as in job logs (every 10%% and 30 s; -q: none)",
    )
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging on rank 0")
    p.add_argument("-q", "--quiet", action="count", default=0, help="warnings only")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser(
        "sweep",
        help="run a grid of configs x seeds (skips what is done)",
        description=SWEEP_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("sweep", metavar="SWEEP.toml", help="sweep file: base, [set], [grid], seeds, [[point]]")
    p.add_argument("--out", metavar="DIR", help="folder of the results files, sweep.json and logs/ (required)")
    p.add_argument("-n", "--ranks", type=positive_int, default=1, help="MPI ranks per point (default 1: no launcher)")
    p.add_argument(
        "--parallel", type=positive_int, default=1, metavar="K", help="points at a time (needs K x RANKS slots)"
    )
    p.add_argument("--dry-run", action="store_true", help="list the points, their files and status; run nothing")
    p.add_argument("--count", action="store_true", help="print the number of points and exit")
    p.add_argument(
        "--array-index",
        type=int,
        metavar="I",
        help="run point I only (default: $SLURM_ARRAY_TASK_ID when set, else every point)",
    )
    p.set_defaults(func=_cmd_sweep)

    add_reproduce_parser(sub, positive_int)

    p = sub.add_parser("info", help="summarise results files", description="Print config, status and final metrics.")
    p.add_argument(
        "results", nargs="+", help="results files, directories (every *.h5 below them) or quoted glob patterns"
    )
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser(
        "repair",
        help="make a killed run's results file readable by any HDF5 reader",
        description="A run killed before it closed its results file (kill -9, a node failure) leaves it marked "
        "'open for write', which plain HDF5 readers refuse (mpicomp's own readers still open it). This rewrites "
        "the file without the mark (like HDF5's h5clear -s), keeping every row, the status and the config.",
    )
    p.add_argument("results", nargs="+", help="HDF5 results file(s)")
    p.set_defaults(func=_cmd_repair)

    p = _runs_parser(sub, "compare", "compare runs in one table", COMPARE_DESCRIPTION)
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="METRIC=VALUE",
        help="a target to reach: loss=0.3, suboptimality=1e-6, accuracy=0.9 (= means >= for accuracy, "
        "<= otherwise; METRIC<=VALUE and METRIC>=VALUE say it explicitly); repeatable",
    )
    p.add_argument(
        "--metric",
        action="append",
        default=[],
        metavar="NAME",
        help="also show the final value of this metric column (e.g. dist_to_opt, skips); repeatable",
    )
    p.add_argument("--sort", metavar="COLUMN", help="sort the rows by this column (runs without a value last)")
    p.add_argument("--reverse", action="store_true", help="sort in descending order")
    p.add_argument(
        "--group-seeds",
        action="store_true",
        help="one row per set of runs whose configs differ only in run.seed: mean ± sample std",
    )
    form = p.add_mutually_exclusive_group()
    form.add_argument("--csv", action="store_true", help="CSV on stdout (notes on stderr)")
    form.add_argument("--json", action="store_true", help="JSON on stdout: columns, rows and notes")
    p.set_defaults(func=_cmd_compare)

    p = _runs_parser(sub, "plot", "plot metrics of runs against rounds, bits or time", PLOT_DESCRIPTION)
    p.add_argument(
        "--y",
        action="append",
        metavar="METRIC",
        help="metric column to plot (default loss; suboptimality, grad_norm_sq, test_accuracy, ...); repeatable",
    )
    p.add_argument(
        "--x",
        action="append",
        choices=("rounds", "bits", "modelled_time", "wall_time"),
        help="x-axis: rounds (default), bits (sent up + down), modelled_time or wall_time; repeatable",
    )
    p.add_argument(
        "--out",
        help="figure file: .png, .pdf or .svg (default: a PNG named after the first RUNS argument, beside it)",
    )
    p.add_argument("--yscale", choices=("auto", "linear", "log"), default="auto", help="y axis scale (default auto)")
    p.add_argument("--xscale", choices=("linear", "log"), default="linear", help="x axis scale (default linear)")
    p.add_argument("--title", help="figure title")
    p.set_defaults(func=_cmd_plot)

    p = _runs_parser(sub, "export", "write the runs' logged rows as one CSV or Parquet table", EXPORT_DESCRIPTION)
    form = p.add_mutually_exclusive_group(required=True)
    form.add_argument("--csv", metavar="FILE", help="CSV file (- for standard output)")
    form.add_argument("--parquet", metavar="FILE", help="Parquet file (needs pyarrow)")
    p.add_argument(
        "--config",
        choices=("all", "differing"),
        default="all",
        help="config columns: every key (default) or the keys that differ between the runs",
    )
    p.set_defaults(func=_cmd_export)

    from .data.fetch import KNOWN

    p = sub.add_parser(
        "data",
        help="fetch the datasets the configs use (mnist, a9a, ...) into a cache",
        description="Download known datasets into the cache ($MPICOMP_DATA, else $XDG_CACHE_HOME/mpicomp or "
        '~/.cache/mpicomp), checked against their SHA-256; configs then say dataset = "mnist" or "libsvm:a9a".',
    )
    data = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    q = data.add_parser("list", help="the known datasets and whether they are in the cache")
    q.add_argument("--dir", help="cache folder (default: $MPICOMP_DATA or the user's cache folder)")
    q = data.add_parser("fetch", help="download a dataset into the cache")
    q.add_argument("name", choices=tuple(KNOWN), metavar="NAME", help=f"one of {', '.join(KNOWN)}")
    q.add_argument("--dir", help="cache folder (default: $MPICOMP_DATA or the user's cache folder)")
    q.add_argument("--mirror", metavar="URL", help="download from this folder URL (http://, file://) instead")
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("compressors", help="list compressors", description="The compressor registry as a table.")
    p.add_argument("--d", type=positive_int, default=100_000, help="dimension for omega/alpha and bits (default 1e5)")
    p.set_defaults(func=_cmd_compressors)

    p = sub.add_parser(
        "compile",
        help="compile every numba kernel now (before batch jobs)",
        description="Compile every numba kernel into numba's on-disk cache, so that runs start without "
        "compiling. Run it once per install, with the NUMBA_CACHE_DIR the jobs will use, on a node with the "
        "jobs' CPU (numba keeps its cache per CPU name and features).",
    )
    p.set_defaults(func=_cmd_compile)

    p = sub.add_parser("methods", help="list methods and their [method] options")
    p.set_defaults(func=_cmd_methods)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:  # `mpicomp compare --json | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
