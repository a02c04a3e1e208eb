"""Can a kernel two-sample test tell the `points` recipe's samples from held-out data?

For several shapes a user might bring (made here: two half-moons, a Swiss roll in 3-D, a mixture of
8 Gaussians in 10-D, an anisotropic 3-D Gaussian with scales from 0.01 to 100), 10,000 training
points are saved as .npy and trained with `gankit train FILE.npy` (the `points` preset, one thread,
nothing tuned per shape); then an MMD permutation test (gankit.metrics.toy.mmd_permutation_test:
Gaussian kernel, median-heuristic bandwidth, 500 relabellings) compares 1,500 generated points with
1,500 held-out points. Two controls per shape show the test's scale: fresh data against the
held-out data (the null: p is uniform) and a Gaussian with the data's mean and covariance (a plainly
wrong sampler: the test should reject it).

    python benchmarks/points_two_sample.py --seeds 0 1 --out runs/bench-points
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import gankit
from gankit.metrics.toy import mmd_permutation_test

N_TRAIN, N_TEST = 10_000, 1_500


def moons(n: int, rng: np.random.Generator) -> np.ndarray:
    t = rng.uniform(0, np.pi, n)
    upper = rng.random(n) < 0.5
    x = np.where(upper, np.cos(t), 1 - np.cos(t))
    y = np.where(upper, np.sin(t), 0.5 - np.sin(t))
    return np.stack([x, y], 1) + rng.normal(0, 0.05, (n, 2))


def swiss_roll(n: int, rng: np.random.Generator) -> np.ndarray:
    t = 1.5 * np.pi * (1 + 2 * rng.random(n))
    return np.stack([t * np.cos(t), 21 * rng.random(n), t * np.sin(t)], 1) + rng.normal(0, 0.2, (n, 3))


def mixture_10d(n: int, rng: np.random.Generator) -> np.ndarray:
    centres = np.random.default_rng(1234).normal(0, 3, (8, 10))  # the same 8 centres for every seed
    return centres[rng.integers(0, 8, n)] + rng.normal(0, 0.5, (n, 10))


def anisotropic(n: int, rng: np.random.Generator) -> np.ndarray:
    mixing = np.linalg.qr(np.random.default_rng(99).normal(size=(3, 3)))[0]  # rotated: scales mix per axis
    return (rng.normal(size=(n, 3)) * np.array([0.01, 1.0, 100.0])) @ mixing.T + np.array([5.0, -3.0, 1000.0])


SHAPES = {"moons (2-D)": moons, "Swiss roll (3-D)": swiss_roll, "8 Gaussians (10-D)": mixture_10d,
          "anisotropic Gaussian (3-D, scales 0.01-100)": anisotropic}


def train(file: Path, run: Path, seed: int, settings: list[str]) -> float:
    sets = [a for s in settings for a in ("--set", s)]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "gankit.cli", "train", str(file), "--out", str(run), "--overwrite",
                    "--quiet", "--no-plots", "--seed", str(seed), *sets], check=True,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/bench-points")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), help="names as in the table")
    parser.add_argument("--set", action="append", default=[], help="config override for every run")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("| data | seed | training time | p: fresh data (null) | p: gankit `points` | MMD^2 gankit | "
          "p: Gaussian fit (wrong) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.shapes:
        make = SHAPES[name]
        for seed in args.seeds:
            rng = np.random.default_rng(seed)
            data, held_out, fresh = make(N_TRAIN, rng), make(N_TEST, rng), make(N_TEST, rng)
            slug = name.split(" ")[0].lower() + f"-{seed}"
            np.save(out / f"{slug}.npy", data)
            seconds = train(out / f"{slug}.npy", out / slug, seed, args.set)
            generated = gankit.load(out / slug).sample(N_TEST, seed=seed).astype(np.float64)
            gaussian = rng.multivariate_normal(data.mean(0), np.cov(data.T), N_TEST)
            p = {k: mmd_permutation_test(v, held_out, seed=seed) for k, v in
                 (("fresh", fresh), ("gankit", generated), ("gaussian", gaussian))}
            print(f"| {name} | {seed} | {seconds:.0f} s | {p['fresh']['p_value']:.3f} | "
                  f"**{p['gankit']['p_value']:.3f}** | {p['gankit']['mmd2']:.2e} | {p['gaussian']['p_value']:.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
