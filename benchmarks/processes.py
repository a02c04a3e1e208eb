"""Training speed of one process against several under torchrun, same preset and global batch.

Each configuration trains the preset for --steps steps into a fresh run directory; the speed is the
last logged row's images per second (image presets) or steps per second, so start-up is left out.
CPU runs split the machine's cores between the processes (OMP_NUM_THREADS); on a GPU machine use
--device cuda and --procs up to the number of GPUs.

    python benchmarks/processes.py --preset mnist-dcgan --steps 300 --procs 1 2 \\
        --set data.root=../shared/data/mnist --set data.split=test
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path


def train(preset: str, procs: int, steps: int, device: str, sets: list[str], out: Path) -> dict:
    run = out / f"{preset}-x{procs}"
    gankit = ["-m", "gankit", "train", preset, "--steps", str(steps), "--out", str(run), "--overwrite",
              "--quiet", "--no-plots", "--device", device, "--set", "train.snapshot_every=0", "--set", "train.max_minutes=0",
              *[a for s in sets for a in ("--set", s)]]
    cmd = [sys.executable, *gankit] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs), *gankit]
    threads = max(1, (os.cpu_count() or 1) // procs)
    subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)},
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if "d_loss" in r][-1]
    return {"procs": procs, "threads": threads, "seconds": last["seconds"],
            "steps_per_s": last["step"] / last["seconds"], "images_per_s": last.get("images_per_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="mnist-dcgan")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--set", action="append", default=[], help="config override, as for gankit train")
    parser.add_argument("--out", default="runs/bench-processes")
    args = parser.parse_args()
    print("| processes | threads each | steps/s | images/s | training seconds |")
    print("| --- | --- | --- | --- | --- |")
    for procs in args.procs:
        r = train(args.preset, procs, args.steps, args.device, args.set, Path(args.out))
        images = f"{r['images_per_s']:.0f}" if r["images_per_s"] is not None else "-"
        print(f"| {procs} | {r['threads']} | {r['steps_per_s']:.2f} | {images} | {r['seconds']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
