"""A reference posterior for a run config: a long uncompressed MALA chain, cached for the samplers.

``python tools/reference_posterior.py CONFIG.toml [--iterations 200000]`` builds the config's
problem exactly as ``mpicomp run`` does (same data, split and shards) and samples
``pi(theta) ∝ exp(-U(theta))``, ``U = sum_i m_i f_i`` (the sample-weighted view of
``mpicomp/problems/base.py``), with the Metropolis-adjusted Langevin algorithm on full gradients:

    theta' = theta - h grad U(theta) + sqrt(2 h) xi,   accepted with probability
    min(1, exp(-U(theta') - |theta - theta' + h grad U(theta')|^2 / (4h) + U(theta) + |theta' - theta + h grad U(theta)|^2 / (4h))),

started at the MAP, with h adapted during burn-in towards an acceptance rate of 0.574 (Roberts and
Rosenthal 1998) and then fixed, so the chain is exact (no discretisation bias). The mean and the
per-coordinate variance of the kept states are written to the cache file the problem reads
(``GLMProblem.posterior_cache_path``); runs of samplers on that config then report
``posterior_mean_mse`` and ``posterior_variance_mse`` against it.
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import numpy as np

from mpicomp.config import ConfigError, load
from mpicomp.problems.optimum import cached_arrays
from mpicomp.rng import root_seed
from mpicomp.runner import build_problem_from

TARGET_ACCEPTANCE = 0.574


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("config", help="the run config whose [problem] and [data] define the posterior")
    parser.add_argument("--iterations", type=int, default=200_000, help="kept MALA states (default 200000)")
    parser.add_argument("--burn-in", type=int, default=20_000, help="adaptation steps first (default 20000)")
    parser.add_argument("--seed", type=int, default=12345, help="seed of the chain (not of the data)")
    parser.add_argument("--force", action="store_true", help="recompute even if the cache file exists")
    args = parser.parse_args()
    if args.iterations < 2 or args.burn_in < 0:
        parser.error("--iterations must be >= 2 and --burn-in >= 0")
    return args


def mala(problem, iterations: int, burn_in: int, seed: int) -> dict[str, np.ndarray]:
    """Kept-state mean and variance of a MALA chain on ``U`` (module docstring), with diagnostics."""
    rng = np.random.default_rng(seed)
    theta = problem.map_point()
    value, grad = problem.potential_and_grad(theta)
    scale = float(problem.sample_counts().sum()) * problem.smoothness()
    step = 0.5 / scale
    total, squares, accepted = np.zeros(problem.d), np.zeros(problem.d), 0
    for t in range(burn_in + iterations):
        proposal = theta - step * grad + math.sqrt(2.0 * step) * rng.standard_normal(problem.d)
        new_value, new_grad = problem.potential_and_grad(proposal)
        forward = proposal - theta + step * grad
        backward = theta - proposal + step * new_grad
        log_ratio = value - new_value + (forward @ forward - backward @ backward) / (4.0 * step)
        accept = math.log(rng.random()) < log_ratio
        if accept:
            theta, value, grad = proposal, new_value, new_grad
        if t < burn_in:
            step *= math.exp(0.01 * ((1.0 if accept else 0.0) - TARGET_ACCEPTANCE))
            continue
        accepted += accept
        total += theta
        squares += theta * theta
    mean = total / iterations
    variance = (squares - iterations * mean * mean) / (iterations - 1)
    return {"mean": mean, "variance": variance, "step": np.array(step), "acceptance": np.array(accepted / iterations)}


def main() -> int:
    args = parse_args()
    try:
        config = load(args.config)
    except ConfigError as exc:
        print(f"reference_posterior: config error: {exc}", file=sys.stderr)
        return 2
    problem = build_problem_from(config, root_seed(config.run["seed"]))
    if not hasattr(problem, "posterior_cache_path"):
        print(
            f"reference_posterior: problem {config.problem['name']!r} has its posterior in closed form", file=sys.stderr
        )
        return 2
    path = problem.posterior_cache_path()
    if args.force:
        path.unlink(missing_ok=True)
    start = time.perf_counter()
    data = cached_arrays(path, lambda: mala(problem, args.iterations, args.burn_in, args.seed))
    seconds = time.perf_counter() - start
    print(f"reference posterior of {config.problem['name']} on {config.problem['dataset']}: {path}")
    if "acceptance" in data:
        print(f"  MALA step {float(data['step']):.3g}, acceptance {float(data['acceptance']):.3f}, {seconds:.1f} s")
    print(f"  mean[:5] {np.array2string(data['mean'][:5], precision=4)}")
    print(f"  variance[:5] {np.array2string(data['variance'][:5], precision=3)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
