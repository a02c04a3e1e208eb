"""ring8 and grid25 over many seeds, scored as VEEGAN and PacGAN score them (2,500 samples).

Each run is `gankit train PRESET --seed S` in its own process (one thread each), then
`gankit eval RUN --metrics modes --json`. Prints one Markdown table row per preset: modes covered,
% high-quality samples, reverse KL (mean +- standard error over seeds), runs with every mode,
and the mean wall time of a run (training + evaluation, no plots).

    python benchmarks/mixtures.py --presets ring8 grid25 --seeds 0-9 --jobs 2
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

TOTAL_MODES = {"ring8": 8, "grid25": 25}


def gankit(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "gankit.cli", *args], env=env, check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return done.stdout


def one_run(preset: str, seed: int, out: Path, settings: list[str]) -> dict:
    run = out / f"{preset}-seed-{seed}"
    started = time.perf_counter()
    sets = [a for s in settings for a in ("--set", s)]
    gankit("train", preset, "--seed", str(seed), "--out", str(run), "--overwrite", "--quiet", "--no-plots", *sets)
    scores = json.loads(gankit("eval", str(run), "--metrics", "modes", "-n", "2500", "--json"))
    scores["seconds"] = time.perf_counter() - started
    return scores


def mean_se(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    se = v.std(ddof=1) / np.sqrt(len(v)) if len(v) > 1 else 0.0
    return f"{v.mean():.3g} +- {se:.2g}"


def parse_seeds(text: str) -> list[int]:
    if "-" in text:
        low, high = text.split("-")
        return list(range(int(low), int(high) + 1))
    return [int(s) for s in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["ring8", "grid25"])
    parser.add_argument("--seeds", default="0-9", help="e.g. 0-9 or 0,3,5")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], help="config override for every run")
    parser.add_argument("--out", default="runs/bench-mixtures")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    print("| preset | seeds | modes (of K) | high quality | reverse KL | runs with every mode | wall time / run |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.presets:
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda s: one_run(preset, s, Path(args.out), args.set), seeds))
        for seed, r in zip(seeds, rows):
            print(f"<!-- {preset} seed {seed}: {json.dumps(r)} -->", file=sys.stderr)
        kl = [r["reverse_kl"] if r["reverse_kl"] is not None else float("nan") for r in rows]
        full = sum(r["modes"] == TOTAL_MODES.get(preset, -1) for r in rows)
        print(f"| `{preset}` | {len(seeds)} | {mean_se([r['modes'] for r in rows])} (of {TOTAL_MODES.get(preset, '?')}) | "
              f"{mean_se([100 * r['high_quality'] for r in rows])}% | {mean_se(kl)} | {full}/{len(rows)} | "
              f"{np.mean([r['seconds'] for r in rows]):.0f} s |", flush=True)


if __name__ == "__main__":
    main()
