"""Run every benchmark and write the performance page: ``docs/performance.md`` and its curves.

``python tools/bench_all.py`` runs each benchmark of ``tools/`` as a subprocess (under the venv's
``mpiexec`` with the rank count it is stated for), keeps its whole output, collects its
machine-readable ``PASS``/``MISS`` lines, measures the start-up of ``mpicomp run`` (cold and warm
numba cache), runs the scans behind the planning curves (rounds/s against logical workers and
against d) and writes ``docs/performance.md`` with the PNGs in ``docs/performance/``.
``--quick`` runs every benchmark with small sizes and few repeats (a check that all of it works,
not figures to plan by). Every benchmark's output is kept in ``docs/performance/results.json``;
``--only NAME`` (repeatable) re-runs some benchmarks and rewrites the page with the others' kept
outputs (each section says when it ran). The hand-written ``docs/performance/notes.md`` (where the time goes, the
before/after of the changes) is included after the targets. A benchmark that fails is reported on the page with its exit code and output.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / "tools"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
DEFAULT_MNIST = ROOT.parent / "shared" / "datasets" / "mnist"
VERDICT = re.compile(r"^(PASS|MISS)\b.*$", re.MULTILINE)
WORKER_LINE = re.compile(
    r"^\s*(\d+) workers:\s+([\d.]+) rounds/s \([\d.]+ ms a round\); bare gradients\s+([\d.]+) rounds/s "
    r"\(ratio [\d.]+\); stacked gradients\s+([\d.]+) rounds/s",
    re.MULTILINE,
)
ROUND_LINE = re.compile(r"^mpicomp round\s+([\d.]+)\s+([\d.]+)", re.MULTILINE)


@dataclass
class Result:
    """One benchmark's run: its command, exit code, seconds, output and verdict lines."""

    name: str
    command: list[str]
    returncode: int
    seconds: float
    output: str
    verdicts: list[str] = field(default_factory=list)
    when: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"))
    load: str = field(default_factory=lambda: load())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, few repeats: a check, not figures")
    parser.add_argument("--only", action="append", metavar="NAME", help="run only this benchmark (repeatable)")
    parser.add_argument("--mnist", type=Path, default=DEFAULT_MNIST, help="directory with the MNIST idx files")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs", help="where performance.md goes (default docs/)")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per benchmark before it is stopped")
    return parser.parse_args()


def mpi(ranks: int, *args: str) -> list[str]:
    return [str(MPIEXEC), "-n", str(ranks), sys.executable, *args]


def tool(name: str) -> str:
    return str(TOOLS / name)


def benchmarks(quick: bool, mnist: Path) -> dict[str, list[list[str]]]:
    """Every benchmark's commands (one benchmark may run several), full or ``--quick`` sizes."""
    d_kernels, d_vq, repeat = ("65536", "16384", "2") if quick else ("16777216", "1048576", "5")
    round_repeats = "5" if quick else "30"
    rounds = "5" if quick else "30"
    mnist_workers = ["100", "1000"] if quick else ["100", "1000", "10000"]
    method_workers = "100" if quick else "1000"
    small_workers = ["1000", "10000"] if quick else ["1000", "10000", "100000"]
    m = ["--mnist", str(mnist)]
    return {
        "kernels": [[sys.executable, tool("bench_kernels.py"), "--d", d_kernels, "--repeat", repeat]],
        "vq": [[sys.executable, tool("bench_vq.py"), "--d", d_vq, "--copy-d", d_kernels, "--repeat", repeat]],
        "round": [
            mpi(ranks, "-m", "mpi4py", tool("bench_round.py"), "--compressor", codec, "--repeats", round_repeats)
            for ranks in (4, 2)
            for codec in ("identity", "natural")
        ],
        "python-cost": [
            [
                sys.executable,
                tool("bench_python_cost.py"),
                "--compressor",
                codec,
                *(["--repeats", "50"] if quick else []),
            ]
            for codec in ("identity", "natural")
        ],
        "workers": [
            mpi(2, "-m", "mpi4py", tool("bench_workers.py"), *m, "--workers", *mnist_workers, "--rounds", rounds),
            mpi(2, "-m", "mpi4py", tool("bench_workers.py"), "--problem", "small", "--workers", *small_workers),
        ],
        "methods": [
            mpi(2, "-m", "mpi4py", tool("bench_workers.py"), *m, "--workers", method_workers, "--rounds", rounds)
            + ["--method", method, "--uplink", uplink, "--batch", batch]
            for method, uplink, batch in METHOD_CODECS
        ],
        "memory": [
            [sys.executable, tool("bench_memory.py"), *m, *(["--ranks", "1", "2"] if quick else [])],
            [
                sys.executable,
                tool("bench_memory.py"),
                *m,
                "--per-worker",
                *(["200", "2000"] if quick else ["1000", "10000"]),
            ],
        ],
        "switch": [
            [sys.executable, tool("bench_switch.py"), "convert", *(["--d", "65536", "--repeat", "2"] if quick else [])],
            mpi(
                4,
                "-m",
                "mpi4py",
                tool("bench_switch.py"),
                "round",
                *(["--d", "100000", "--repeat", "3"] if quick else []),
            ),
        ],
        "checkpoint": [
            [sys.executable, tool("bench_checkpoint.py"), *m, *(["--workers", "100", "--ranks", "1"] if quick else [])]
        ],
        "d-scan": [
            mpi(
                2,
                "-m",
                "mpi4py",
                tool("bench_round.py"),
                "--compressor",
                "natural",
                "--d",
                d,
                "--repeats",
                round_repeats,
            )
            for d in (["1e3", "1e5"] if quick else ["1e3", "1e4", "1e5", "1e6", "1e7"])
        ],
    }


def run_commands(name: str, commands: list[list[str]], timeout: float, env: dict[str, str]) -> Result:
    """Run a benchmark's commands one after the other; the output of all, the first failure's code."""
    started, outputs, code = time.perf_counter(), [], 0
    for command in commands:
        shown = " ".join(Path(c).name if c in (sys.executable, str(MPIEXEC)) else c for c in command)
        print(f"[bench_all] {name}: {shown}", flush=True)
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, check=False)
            output, status = proc.stdout + proc.stderr, proc.returncode
        except subprocess.TimeoutExpired as expired:
            partial = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
            output, status = f"{partial}\nstopped after {timeout:.0f} s", 124
        outputs.append(f"$ {shown}\n{output.strip()}")
        code = code or status
    text = "\n\n".join(outputs)
    verdicts = [line for line in text.splitlines() if VERDICT.match(line)]
    return Result(name, commands[0], code, time.perf_counter() - started, text, verdicts)


def startup(mnist: Path, env: dict[str, str], quick: bool) -> Result:
    """Time to the first round of ``mpicomp run`` on 2 ranks (``/startup_seconds``) and the whole
    command's wall time: 100 workers with a fresh numba cache (cold) and then the same cache again (warm);
    then many workers (10,000; ``quick``: 1,000) with the warm cache, solving the reference optimum into a
    fresh optimum cache (a first run on a dataset and partition)."""
    import h5py

    many = 1000 if quick else 10_000
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "startup.h5"
        caches = {"NUMBA_CACHE_DIR": str(Path(tmp) / "numba-cache"), "MPICOMP_CACHE": str(Path(tmp) / "optima")}

        def command(workers: int, optimum: bool) -> list[str]:
            settings = {
                "problem.name": '"softmax"',
                "problem.dataset": f'"mnist:{mnist}"',
                "data.workers": str(workers),
                "compressor.uplink": '"natural"',
                "run.rounds": "1",
                "run.optimum": str(optimum).lower(),
            }
            sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
            return mpi(2, "-m", "mpicomp", "run", *sets, "--out", str(out), "--overwrite")

        runs = [
            ("cold numba cache", command(100, False)),
            ("warm numba cache", command(100, False)),
            (f"{many:,} workers, warm numba cache, the reference optimum solved", command(many, True)),
        ]
        for what, run in runs:
            started = time.perf_counter()
            proc = subprocess.run(run, capture_output=True, text=True, env={**env, **caches}, check=False)
            wall = time.perf_counter() - started
            if proc.returncode != 0:
                return Result("startup", run, proc.returncode, wall, proc.stdout + proc.stderr)
            with h5py.File(out, "r") as results:
                seconds = float(results["startup_seconds"][()])
            lines.append(f"{what}: start-up {seconds:.1f} s (to round 1), whole command {wall:.1f} s")
    return Result("startup", runs[0][1], 0, 0.0, "\n".join(lines))


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        model = cpu
    memory = ""
    try:
        kib = int(
            next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith("MemTotal")).split()[1]
        )
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration, ValueError):
        pass
    return f"{os.cpu_count()} cores ({model}){memory}, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def save(fig: Any, ax: Any, path: Path) -> None:
    """A log-log curve's grid and legend, then the PNG (the figure is closed)."""
    import matplotlib.pyplot as plt

    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_curves(results: dict[str, Result], figures: Path) -> list[str]:
    """PNGs of rounds/s against workers and against d; the Markdown lines that show them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures.mkdir(parents=True, exist_ok=True)
    shown = []
    if "workers" in results:
        text = results["workers"].output
        blocks = text.split("$ ")[1:]
        fig, ax = plt.subplots(figsize=(6, 4))
        for block, label in zip(blocks, ("MNIST softmax, d = 7,850", "small logistic, d = 16"), strict=False):
            found = [(int(w), float(r), float(b), float(g)) for w, r, b, g in WORKER_LINE.findall(block)]
            if found:
                ws, rates, bare, stacked = zip(*found, strict=True)
                ax.loglog(ws, rates, "o-", label=f"mpicomp, {label}")
                ax.loglog(ws, bare, "x--", label=f"bare gradients, {label}")
                ax.loglog(ws, stacked, "+:", label=f"stacked gradients, {label}")
        ax.set(xlabel="logical workers (2 ranks)", ylabel="rounds / s", title="Rounds per second against workers")
        save(fig, ax, figures / "rounds_vs_workers.png")
        shown.append("![rounds/s against workers](performance/rounds_vs_workers.png)")
    if "d-scan" in results:
        points: list[tuple[float, float]] = []
        for block in results["d-scan"].output.split("$ ")[1:]:
            dimension, timing = re.search(r"--d (\S+)", block), ROUND_LINE.search(block)
            if dimension and timing:
                points.append((float(dimension.group(1)), 1e3 / float(timing.group(2))))  # median ms
        if points:
            ds, rates = zip(*sorted(points), strict=True)
            fig, ax = plt.subplots(figsize=(6, 4))
            ax.loglog(ds, rates, "o-", label="gd/sgd round, natural both ways, 2 ranks")
            ax.set(xlabel="d (coordinates)", ylabel="rounds / s (median)", title="Rounds per second against d")
            save(fig, ax, figures / "rounds_vs_d.png")
            shown.append("![rounds/s against d](performance/rounds_vs_d.png)")
    return shown


INTRO = """# Performance

The figures on this page come from {source}, on
this machine: {machine}. Absolute times move with the machine's load (its load average at the start
and end of the run is below; a shared machine moves them from run to run), so **same-run ratios are
what count**, and every target is stated as one (each benchmark times its variants interleaved, in
the same repeats). Re-run the command to regenerate the page and the curves.

Load average (1, 5, 15 min): {load_start} at the start, {load_end} at the end; the whole run took {minutes:.0f} min.
"""

METHOD_CODECS = [  # every method of the papers at many workers: a codec its theory takes, its minibatch
    ("sgd", "natural", "16"),
    ("diana", "natural", "16"),
    ("diana", "randk(k=0.01)", "16"),
    ("vr-diana", "natural", "16"),
    ("qsvrg", "natural", "16"),
    ("quantized-sgd", "qsgd(s=16)", "16"),
    ("qlsd", "qsgd(s=16)", "16"),  # QLSD++, a sampler
    ("ef14", "topk(k=0.01)", "16"),
    ("ef21", "topk(k=0.01)", "16"),
    ("ef21-sgdm", "topk(k=0.01)", "16"),
    ("ef21-sgd2m", "topk(k=0.01)", "16"),
    ("slaq", "identity", "16"),
    ("lag", "identity", "0"),  # full local gradients, skipped where lazy: the bare bound computes them all
    ("laq", "identity", "0"),
]

WHAT = {
    "kernels": "Codec throughput: encode / decode / decode_add of every compressor, against `np.copyto` (`tools/bench_kernels.py`).",
    "vq": "Vector quantizers against the BLAS product their search is (`tools/bench_vq.py`).",
    "round": "One gd/sgd round at d = 10⁶ (one worker per rank) against the ideal bare mpi4py + NumPy program and raw collectives, 4 and 2 ranks, identity and natural (`tools/bench_round.py`); target: mpicomp / ideal <= 1.1.",
    "python-cost": "The Python around a round's kernels, mpicomp's round against the ideal program's, warm and after evicting the L3 (one process, d = 1000; `tools/bench_python_cost.py`): what the 4-rank round pays on every rank, every round (notes above).",
    "workers": "Rounds/s with many logical workers on 2 ranks against the bare per-worker gradient arithmetic (a plain loop over each rank's workers), the same gradients stacked as mpicomp computes them, and the codec floor on those (`tools/bench_workers.py`); target: >= 0.8 x bare at 10,000 (MNIST) and 100,000 (small) workers.",
    "methods": "Rounds/s of every method at 1,000 workers (`--quick`: 100) on 2 ranks (MNIST softmax, minibatch 16, each with a codec its theory takes and its default step), against the same bare gradient arithmetic as `workers` (`tools/bench_workers.py --method --uplink --batch`); LAG and LAQ take full local gradients and skip lazy uploads, so theirs is not a bound. No target: what a method or codec adds to the gradients, to plan by.",
    "memory": "Peak RSS per rank as ranks are added, and bytes per added worker against a worker's message and bookkeeping (`tools/bench_memory.py`).",
    "switch": "The emulated switch: host conversion against `np.copyto`, and a switch round against the gather round (`tools/bench_switch.py`).",
    "checkpoint": "Checkpoint size, write and load time at 1,000 workers (`tools/bench_checkpoint.py`).",
    "startup": "Time to the first round of `mpicomp run` (MNIST softmax, 2 ranks): 100 workers with a cold and a warm numba cache, then 10,000 workers solving the reference optimum (a first run on that partition; later runs read it from the cache), measured by `tools/bench_all.py`.",
    "d-scan": "Round time against d (natural both ways, 2 ranks; `tools/bench_round.py --d`), for the curve below.",
}


def write_page(args: argparse.Namespace, results: dict[str, Result], loads: tuple[str, str], minutes: float) -> Path:
    page = args.docs / "performance.md"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = "python tools/bench_all.py" + (" --quick" if args.quick else "")
    if args.only:
        only = " ".join(f"--only {name}" for name in args.only)
        source = (
            f"`{command} {only}` on {when}, which re-ran {', '.join(args.only)}; the other benchmarks' figures are "
            "kept from earlier runs (each section below says when it ran)"
        )
    else:
        source = f"one run of `{command}` on {when}"
    text = [
        INTRO.format(
            source=source,
            machine=machine(),
            load_start=loads[0],
            load_end=loads[1],
            minutes=minutes,
        )
    ]
    text.append("## Targets\n")
    text.append("| benchmark | verdict line |\n|---|---|")
    for result in results.values():
        if result.returncode != 0:
            text.append(f"| {result.name} | FAILED (exit code {result.returncode}) |")
        for line in result.verdicts:
            text.append(f"| {result.name} | `{line}` |")
    notes = args.docs / "performance" / "notes.md"  # hand-written: where the time goes, before/after
    if notes.is_file():
        text.append("\n" + notes.read_text().strip() + "\n")
    text.append("\n## Curves to plan by\n")
    text.extend(line + "\n" for line in plot_curves(results, args.docs / "performance"))
    text.append("## Every benchmark's output\n")
    for result in results.values():
        text.append(
            f"### {result.name}\n\n{WHAT.get(result.name, '')} Ran {result.when}, load average {result.load}.\n"
        )
        text.append(f"```\n{result.output.strip()}\n```\n")
    page.write_text("\n".join(text) + "\n")
    return page


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    args = parse_args()
    if not MPIEXEC.exists():
        raise SystemExit(f"bench_all: {MPIEXEC} not found; install the test extra (the mpich wheel)")
    if not args.mnist.is_dir():
        raise SystemExit(f"bench_all: MNIST directory {args.mnist} not found; pass --mnist DIR")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    names = [*benchmarks(args.quick, args.mnist), "startup"]
    unknown = sorted(set(args.only or []) - set(names))
    if unknown:
        raise SystemExit(f"bench_all: unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(names)}")
    chosen = [name for name in names if not args.only or name in args.only]
    loads, started = [load()], time.perf_counter()
    results: dict[str, Result] = {}
    for name in chosen:
        if name == "startup":
            results[name] = startup(args.mnist, env, args.quick)
        else:
            results[name] = run_commands(name, benchmarks(args.quick, args.mnist)[name], args.timeout, env)
        print(f"[bench_all] {name}: exit {results[name].returncode}; " + "; ".join(results[name].verdicts), flush=True)
    loads.append(load())
    kept = args.docs / "performance" / "results.json"
    if args.only and kept.is_file():  # the other benchmarks' outputs of earlier runs, in the usual order
        earlier = {name: Result(**fields) for name, fields in json.loads(kept.read_text()).items()}
        results = {name: results.get(name) or earlier[name] for name in names if name in results or name in earlier}
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(json.dumps({name: asdict(result) for name, result in results.items()}, indent=1) + "\n")
    page = write_page(args, results, (loads[0], loads[1]), (time.perf_counter() - started) / 60)
    print(f"[bench_all] wrote {page}")
    for result in results.values():
        for line in result.verdicts:
            print(line)


if __name__ == "__main__":
    main()
