"""Which digit each of G's InfoGAN categories draws, by the bundled MNIST classifier.

For a run with categories (model.z_categories, as in `mnist-dcgan`) and for each category in turn,
N samples are drawn with that category and fresh continuous noise, the same way `gankit eval`
draws G's samples (its EMA copy, nothing filtered), and the classifier reads them. Printed per
category: the three digits it draws most (shares of its samples) and the share read with
confidence, as `gankit eval` counts it. A digit no category draws, or two categories drawing one
digit, shows here; the class KL of `gankit eval` only shows that the overall mix of digits is uneven.

    python benchmarks/category_digits.py runs/mnist-dcgan [runs/other/checkpoints/step-005000.pt ...] -n 500
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from gankit.api import load
from gankit.errors import UserError
from gankit.metrics.classifier import features_and_probs
from gankit.metrics.features import CONFIDENT_AT


def category_digits(path: str, n: int, seed: int) -> list[tuple[int, np.ndarray, float]]:
    """(category, share of each digit 0-9, share read with confidence) for each category of the run."""
    sampler = load(path).sampler
    model = sampler.config.model
    if not model.z_categories or sampler.shape[1:] != (28, 28):
        raise UserError(f"{path}: needs a run of 28x28 images with InfoGAN categories (model.z_categories > 0)")
    rows = []
    for category in range(model.z_categories):
        z = sampler.noise(n, seed=seed + category)
        z[:, model.z_dim:] = 0.0
        z[:, model.z_dim + category] = 1.0
        labels = sampler.labels(n, None, seed)  # a class-conditional run's classes in turn; else None
        _, probs = features_and_probs(sampler.generate(z, labels))
        shares = np.bincount(probs.argmax(1), minlength=10) / n
        rows.append((category, shares, float((probs.max(1) >= CONFIDENT_AT).mean())))
    return rows


def describe(rows: list[tuple[int, np.ndarray, float]]) -> str:
    lines = ["| category | digits drawn (share of its samples) | confident |", "| --- | --- | --- |"]
    for category, shares, confident in rows:
        top = [d for d in np.argsort(-shares, kind="stable")[:3] if shares[d] >= 0.005]
        drawn = ", ".join(f"{d}: {shares[d]:.0%}" for d in top)
        lines.append(f"| {category} | {drawn} | {confident:.0%} |")
    counts = np.bincount([int(shares.argmax()) for _, shares, _ in rows], minlength=10)
    lines.append(f"digits no category draws most: {', '.join(str(d) for d in np.flatnonzero(counts == 0)) or 'none'}; "
                 f"drawn most by two or more: {', '.join(str(d) for d in np.flatnonzero(counts > 1)) or 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or checkpoints/step-*.pt files")
    parser.add_argument("-n", type=int, default=500, help="samples per category (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of category 0 (category c: seed + c)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.exit(2, "category_digits.py: -n must be at least 1\n")
    torch.set_grad_enabled(False)
    for path in args.runs:
        try:
            print(f"{path}\n{describe(category_digits(path, args.n, args.seed))}\n", flush=True)
        except UserError as error:
            print(f"category_digits.py: {error}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    main()
