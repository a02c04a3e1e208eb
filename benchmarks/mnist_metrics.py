"""Score finished MNIST runs with gankit's image metrics, beside a reference: the MNIST test set
scored against itself.

For each run: `gankit eval RUN -n 5000 --json` (5,000 generated images against 5,000 test images
drawn with a fixed seed). The reference row scores one half of the MNIST test set against the other
half (5,000 each), so every row compares sets of the same size (FID, KID and the k-NN metrics all
depend on it). It is not a ceiling: the runs train on these images, and a generator that memorised
them would score better. Runs come from benchmarks/mnist.py.

    python benchmarks/mnist_metrics.py runs/bench-mnist/* --root ../shared/data/mnist
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from gankit.data.images import ImageSource, load_idx_dataset
from gankit.metrics.evaluate import EvalTarget, evaluate

REPO = Path(__file__).resolve().parent.parent
COLUMNS = [("fid", "FID (classifier)", "{:.2f}"), ("kid", "KID", "{:.4f}"), ("precision", "precision", "{:.3f}"),
           ("recall", "recall", "{:.3f}"), ("density", "density", "{:.3f}"), ("coverage", "coverage", "{:.3f}"),
           ("classifier_score", "classifier score", "{:.2f}"), ("confident", "confident", "{:.1%}"),
           ("classes_covered", "classes", "{}"), ("class_kl", "class KL", "{:.3f}")]


def reference(root: str, n: int) -> dict:
    """n test images against n others (a seeded random split: the test set's first and second 5,000
    come from different writers): what fresh real digits of this set score."""
    test = load_idx_dataset("mnist", root, "test", download=False)
    order = torch.randperm(len(test.images), generator=torch.Generator().manual_seed(0))
    half_a = ImageSource(test.images[order[:n]].numpy(), None, "mnist test, one half")
    half_b = test.images[order[n:2 * n]].numpy().transpose(0, 2, 3, 1)
    return evaluate(EvalTarget(half_a, lambda count, seed: half_b[:count]), ["fid", "kid", "prdc", "classifier"], n)


def score_run(run: Path, root: str, n: int) -> dict:
    cmd = [sys.executable, "-m", "gankit.cli", "eval", str(run), "-n", str(n), "--json", "--set", f"data.root={root}"]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, env={**os.environ}).stdout
    return json.loads(out)


def row(name: str, scores: dict) -> str:
    cells = [fmt.format(scores[key]) for key, _, fmt in COLUMNS]
    return f"| {name} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "mnist"))
    parser.add_argument("-n", type=int, default=5000)
    args = parser.parse_args()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    print("| run | " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("| --- " * (len(COLUMNS) + 1) + "|")
    print(row("MNIST test set, two disjoint random halves (reference)", reference(args.root, args.n)), flush=True)
    for run in map(Path, args.runs):
        scores = score_run(run, args.root, args.n)
        print(row(f"`{run.name}` (step {scores['step']})", scores), flush=True)


if __name__ == "__main__":
    main()
