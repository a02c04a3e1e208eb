"""ring8 and grid25 over many seeds, scored as VEEGAN and PacGAN score them (2,500 samples).

Each run is `gankit train PRESET --seed S --no-plots` in its own process (one thread each), then
`gankit eval RUN --metrics modes -n 2500 --json`, and the same with `--raw` when the run fitted a
rejection critic (train.drs_steps). Prints Markdown table rows per preset, for G's own samples and,
where there is a critic, for the samples it keeps: modes covered, % high-quality samples, reverse KL
(mean +- standard error over seeds), the modes' spread against the data's (metrics/toy.mode_spread),
runs with every mode, and the mean wall time of training (the critic's fit included; evaluation and
plots not).

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
    seconds = time.perf_counter() - started
    scores = {"raw": json.loads(gankit("eval", str(run), "--metrics", "modes", "-n", "2500", "--json", "--raw"))}
    scored = json.loads(gankit("eval", str(run), "--metrics", "modes", "-n", "2500", "--json"))
    if scored["drs"]:
        scores["drs"] = scored
    return {**scores, "seconds": seconds}


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
    print("| preset | samples | seeds | modes (of K) | high quality | reverse KL | mode spread (data = 1) | "
          "runs with every mode | training time / run |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for preset in args.presets:
        with ThreadPoolExecutor(args.jobs) as pool:
            rows = list(pool.map(lambda s: one_run(preset, s, Path(args.out), args.set), seeds))
        for seed, r in zip(seeds, rows):
            print(f"<!-- {preset} seed {seed}: {json.dumps(r)} -->", file=sys.stderr)
        seconds = np.mean([r["seconds"] for r in rows])
        for kind, label in (("raw", "G alone"), ("drs", "kept by the critic (DRS)")):
            if all(kind in r for r in rows):
                print(table_row(preset, label, [r[kind] for r in rows], seconds), flush=True)


def table_row(preset: str, label: str, scores: list[dict], seconds: float) -> str:
    kl, spread = ([s[key] if s.get(key) is not None else float("nan") for s in scores]
                  for key in ("reverse_kl", "mode_spread"))
    full = sum(s["modes"] == TOTAL_MODES.get(preset, -1) for s in scores)
    return (f"| `{preset}` | {label} | {len(scores)} | {mean_se([s['modes'] for s in scores])} "
            f"(of {TOTAL_MODES.get(preset, '?')}) | {mean_se([100 * s['high_quality'] for s in scores])}% | "
            f"{mean_se(kl)} | {mean_se(spread)} | {full}/{len(scores)} | {seconds:.0f} s |")


if __name__ == "__main__":
    main()
