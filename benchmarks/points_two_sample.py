"""Can a two-sample test tell a user's own 2-D points from what the `quadratic` recipe learned?

Makes a 2-D data set a user might bring (two interleaved half-moons with noise, 5,000 points,
saved as .npy), trains `gankit train quadratic --set data.name=points:FILE.npy`, then runs an
energy-distance permutation test (scipy.stats.permutation_test) between 1,000 generated points and
1,000 held-out data points. For scale it runs the same test on two controls: fresh data against
the held-out data (the test's null) and a Gaussian with the data's mean and covariance (a sampler
that is plainly wrong, to show the test has power).

    python benchmarks/points_two_sample.py --out runs/bench-points
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from scipy import stats
from scipy.spatial.distance import cdist

import gankit


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    return np.stack([x, y], 1) + rng.normal(0, 0.05, (n, 2))


def energy_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Szekely's energy distance: 2 E|A-B| - E|A-A'| - E|B-B'|; zero iff the distributions match."""
    return 2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean()


def two_sample_p(a: np.ndarray, b: np.ndarray, seed: int) -> tuple[float, float]:
    """Permutation p-value of the energy distance. scipy permutes 1-D samples, so it permutes row
    indices into the pooled points and the statistic looks the rows up."""
    pooled = np.concatenate([a, b])

    def statistic(i: np.ndarray, j: np.ndarray) -> float:
        return energy_distance(pooled[i.astype(int)], pooled[j.astype(int)])

    res = stats.permutation_test((np.arange(len(a)), np.arange(len(a), len(pooled))), statistic,
                                 vectorized=False, n_resamples=300, alternative="greater",
                                 permutation_type="independent", random_state=seed)
    return float(res.statistic), float(res.pvalue)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench-points")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    data, held_out, fresh = moons(5000, rng), moons(1000, rng), moons(1000, rng)
    np.save(out / "moons.npy", data)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gankit.cli", "train", "quadratic", "--set",
                    f"data.name=points:{out / 'moons.npy'}", "--out", str(out / "run"), "--overwrite", "--quiet",
                    "--seed", str(args.seed)], check=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                   stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - started
    generated = gankit.load(out / "run").sample(1000, seed=args.seed).astype(np.float64)
    gaussian = rng.multivariate_normal(data.mean(0), np.cov(data.T), 1000)
    print(f"training + plots: {seconds:.0f} s; plots in {out / 'run' / 'plots'}")
    print("| sample vs 1,000 held-out data points | energy distance | permutation p-value |")
    print("| --- | --- | --- |")
    for name, sample in (("fresh data (null)", fresh), ("gankit `quadratic` on the points", generated),
                         ("Gaussian with the data's mean and covariance", gaussian)):
        stat, p = two_sample_p(sample, held_out, args.seed)
        print(f"| {name} | {stat:.4f} | {p:.3f} |")


if __name__ == "__main__":
    main()
