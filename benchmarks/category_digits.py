"""Which digit each of G's InfoGAN categories draws, by the bundled MNIST classifier.

For a run with categories (model.z_categories, as in `mnist-dcgan`) and for each category in turn,
N samples are drawn with that category and fresh continuous noise, the same way `gankit eval`
draws G's samples (its EMA copy, nothing filtered), and the classifier reads them. Printed per
category: the three digits it draws most (shares of its samples) and the share read with
confidence, as `gankit eval` counts it. A digit no category draws, or two categories drawing one
digit, shows here; the class KL of `gankit eval` only shows that the overall mix of digits is uneven.

With --real, also how Q (the code head on D) sorts the labelled images the run trained on into the
categories: per category the digits it holds (shares, by their labels) and the one-to-one accuracy,
each category matched to one digit so that the most images agree (Hungarian matching, as clustering
accuracy is scored). G's categories follow Q's sorting: a category that holds two digits of the data
draws both, and its samples are often read with little confidence.

    python benchmarks/category_digits.py runs/mnist-dcgan [runs/other/checkpoints/step-005000.pt ...] -n 500 [--real]
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import replace

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from gankit.api import load
from gankit.config import loads
from gankit.data import make_source
from gankit.errors import UserError
from gankit.metrics.classifier import features_and_probs
from gankit.metrics.features import CONFIDENT_AT
from gankit.training.checkpoint import find_checkpoint, load_checkpoint
from gankit.training.trainer import build_networks, make_normalizer


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


def real_sorting(path: str, root: str | None = None) -> np.ndarray:
    """How Q sorts the run's own training images (from `root` instead of the run's data.root when
    given; never downloaded): counts[category, digit] by the images' labels. D runs as in training,
    with batch statistics over batches of the run's batch size (the last batch may be smaller)."""
    state = load_checkpoint(find_checkpoint(path))
    cfg = loads(state["config"], source=f"the config inside {path}")
    if not cfg.model.z_categories or not cfg.loss.info_weight:
        raise UserError(f"{path}: --real needs a run with InfoGAN's code head (loss.info_weight > 0)")
    data = replace(cfg.data, download=False, root=root or cfg.data.root)
    try:
        source = make_source(data)
    except UserError as error:
        raise UserError(with_root_hint(error, "the folder of the run's data")) from None
    if getattr(source, "labels", None) is None:
        raise UserError(f"{path}: --real needs labelled training images, such as MNIST's")
    make_normalizer(cfg, source)  # the run's pixel scale (model.g_output)
    _, d = build_networks(cfg, tuple(int(v) for v in state["data_shape"]), int(state["num_classes"]))
    d.load_state_dict(state["d"])
    d.train()
    categories = sort_by_q(d, source.scale(source.images), cfg.train.batch_size)
    return counts_by_label(categories, source.labels.numpy(), cfg.model.z_categories, source.num_classes)


def with_root_hint(error: UserError, what: str) -> str:
    """A data loader's message with its config fix (data.root) swapped for this script's --root."""
    return f"{str(error).split(' (set data.root)')[0]} (give --root {what})"


def sort_by_q(d: torch.nn.Module, images: torch.Tensor, batch: int) -> np.ndarray:
    """Each image's category by Q (D's code head), over batches of `batch` with D's batch statistics,
    as in training (D in train mode)."""
    with torch.no_grad():
        return torch.cat([d(images[i:i + batch], None, with_code=True)[1].argmax(1)
                          for i in range(0, len(images), batch)]).numpy()


def counts_by_label(categories: np.ndarray, labels: np.ndarray, num_categories: int, num_labels: int) -> np.ndarray:
    """counts[category, label]: how many images of each label went to each category."""
    counts = np.zeros((num_categories, num_labels), dtype=np.int64)
    np.add.at(counts, (categories, labels), 1)
    return counts


def top_shares(shares: np.ndarray) -> str:
    """The three largest shares (of at least 0.5%) as 'digit: share', largest first."""
    top = [digit for digit in np.argsort(-shares, kind="stable")[:3] if shares[digit] >= 0.005]
    return ", ".join(f"{digit}: {shares[digit]:.0%}" for digit in top)


def one_to_one_accuracy(counts: np.ndarray) -> float:
    """The share of images whose category's matched digit is their own, with each category matched
    to at most one digit and each digit to at most one category, so that the most images agree."""
    rows, cols = linear_sum_assignment(-counts)
    return float(counts[rows, cols].sum() / max(1, counts.sum()))


def describe_real(counts: np.ndarray) -> str:
    lines = ["| category | real digits Q puts there (share by label) | images |", "| --- | --- | --- |"]
    for category, row in enumerate(counts):
        lines.append(f"| {category} | {top_shares(row / max(1, row.sum()))} | {row.sum()} |")
    lines.append(f"Q's sorting of the real digits: one-to-one accuracy {one_to_one_accuracy(counts):.1%}")
    return "\n".join(lines)


def describe(rows: list[tuple[int, np.ndarray, float]]) -> str:
    lines = ["| category | digits drawn (share of its samples) | confident |", "| --- | --- | --- |"]
    for category, shares, confident in rows:
        lines.append(f"| {category} | {top_shares(shares)} | {confident:.0%} |")
    counts = np.bincount([int(shares.argmax()) for _, shares, _ in rows], minlength=10)
    lines.append(f"digits no category draws most: {', '.join(str(d) for d in np.flatnonzero(counts == 0)) or 'none'}; "
                 f"drawn most by two or more: {', '.join(str(d) for d in np.flatnonzero(counts > 1)) or 'none'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", help="run directories or checkpoints/step-*.pt files")
    parser.add_argument("-n", type=int, default=500, help="samples per category (default 500)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed of category 0 (category c: seed + c)")
    parser.add_argument("--real", action="store_true", help="also how Q sorts the labelled images the run trained on")
    parser.add_argument("--root", help="with --real: the folder of the run's data (default: the run's data.root)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.exit(2, "category_digits.py: -n must be at least 1\n")
    torch.set_grad_enabled(False)
    for path in args.runs:
        try:
            sorting = describe_real(real_sorting(path, args.root)) if args.real else None  # refusals first
            print(f"{path}\n{describe(category_digits(path, args.n, args.seed))}\n", flush=True)
            if sorting:
                print(f"{sorting}\n", flush=True)
        except UserError as error:
            print(f"category_digits.py: {error}", file=sys.stderr)
            sys.exit(2)


if __name__ == "__main__":
    main()
