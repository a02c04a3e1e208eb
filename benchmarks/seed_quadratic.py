"""Does `gankit train seed-quadratic` reproduce the source article? One row per seed.

Checks, over the last 10% of steps: mean D loss against 2 ln 2 = 1.386 (within 0.2) and mean G
loss against ln 2 = 0.693 (within 0.15); on 2,000 samples of the run's sampler (what `gankit sample`
gives: the EMA of G): median |y - (10 + x^2)| under 2% of the y range (50) and the
Kolmogorov-Smirnov distance of x to U(-50, 50) under 0.1. The same two sample numbers for the last
iterate of G (`gankit sample --live`, the article's own sampler) are printed beside them.

    python benchmarks/seed_quadratic.py --seeds 0 1 2 3 --jobs 2 --out runs/bench-seed-quadratic
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from scipy import stats

import gankit


def train(seed: int, out: Path, steps: int | None) -> float:
    run = out / f"seed-{seed}"
    cmd = [sys.executable, "-m", "gankit.cli", "train", "seed-quadratic", "--seed", str(seed), "--out", str(run),
           "--overwrite", "--quiet", "--no-plots"]
    if steps:
        cmd += ["--steps", str(steps)]
    started = time.perf_counter()
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def sample_scores(s: np.ndarray) -> tuple[float, float]:
    """Median curve error / y range and KS distance of x to U(-50, 50)."""
    s = s.astype(np.float64)
    return (float(np.median(np.abs(s[:, 1] - (10 + s[:, 0] ** 2))) / 2500),
            float(stats.kstest(s[:, 0], stats.uniform(-50, 100).cdf).statistic))


def score(run: Path) -> dict:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "d_loss" in r]
    last = rows[-1]["step"]
    tail = [r for r in rows if r["step"] > 0.9 * last]
    curve_err, ks_x = sample_scores(gankit.load(run).sample(2000, seed=0))
    live_err, live_ks = sample_scores(gankit.load(run, live=True).sample(2000, seed=0))
    return {
        "d_loss": float(np.mean([r["d_loss"] for r in tail])),
        "g_loss": float(np.mean([r["g_loss"] for r in tail])),
        "curve_err": curve_err, "ks_x": ks_x, "live_curve_err": live_err, "live_ks_x": live_ks,
    }


def passes(m: dict) -> bool:
    return (abs(m["d_loss"] - 1.386) < 0.2 and abs(m["g_loss"] - 0.693) < 0.15
            and m["curve_err"] < 0.02 and m["ks_x"] < 0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--steps", type=int, help="override the preset's 10,001 steps (quick checks only)")
    parser.add_argument("--out", default="runs/bench-seed-quadratic")
    args = parser.parse_args()
    out = Path(args.out)
    with ThreadPoolExecutor(args.jobs) as pool:
        seconds = list(pool.map(lambda s: train(s, out, args.steps), args.seeds))
    print("| seed | mean D loss (last 10%) | mean G loss (last 10%) | median curve error / y range | KS(x) "
          "| all four met | last iterate (--live): curve error, KS(x) | wall time |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for seed, sec in zip(args.seeds, seconds):
        m = score(out / f"seed-{seed}")
        print(f"| {seed} | {m['d_loss']:.3f} | {m['g_loss']:.3f} | {100 * m['curve_err']:.2f}% | {m['ks_x']:.3f} | "
              f"{'yes' if passes(m) else 'no'} | {100 * m['live_curve_err']:.2f}%, {m['live_ks_x']:.3f} | {sec:.0f} s |")


if __name__ == "__main__":
    main()
