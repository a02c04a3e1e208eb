"""Train the MNIST presets on the MNIST test set (../shared/data/mnist) and record their wall time.

For each preset: `gankit train PRESET --set data.root=ROOT --set data.split=test`, then the final
fixed-noise grid is copied to docs/images/PRESET.png and one table row printed (steps, wall time,
final D(x) and D(G(z))). Judge the grids by eye; benchmarks/mnist_metrics.py scores them.

    python benchmarks/mnist.py --presets seed-mnist-mlp mnist-mlp mnist-dcgan mnist-cdcgan
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--presets", nargs="+", default=["seed-mnist-mlp", "mnist-mlp", "mnist-dcgan", "mnist-cdcgan"])
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("--out", default="runs/bench-mnist")
    parser.add_argument("--images", default=str(REPO / "docs" / "images"))
    args = parser.parse_args()
    if not Path(args.root).is_dir():
        sys.exit(f"MNIST folder {args.root} not found; pass --root")
    rows = []
    for preset in args.presets:
        run = Path(args.out) / preset
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gankit.cli", "train", preset, "--set", f"data.root={args.root}",
                        "--set", "data.split=test", "--out", str(run), "--overwrite", "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        last = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if '"d_loss"' in line][-1]
        grid = sorted((run / "samples").glob("grid-step-*.png"))[-1]
        Path(args.images).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(grid, Path(args.images) / f"{preset}.png")
        rows.append(f"| `{preset}` | {last['step']} | {seconds / 60:.1f} min | {last['d_real']:.2f} | "
                    f"{last['d_fake']:.2f} | ![{preset}](images/{preset}.png) |")
        print(rows[-1], flush=True)
    print("| preset | steps | wall time (training + plots) | final D(x) | final D(G(z)) | samples (fixed noise) |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
