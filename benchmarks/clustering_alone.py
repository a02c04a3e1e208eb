"""Q's sorting of real digits without the GAN: how well invariant information clustering (IIC, the
`loss.info_real` term of `mnist-dcgan`) sorts MNIST into categories on D's network alone.

D's network as `mnist-dcgan` builds it (two convolutions with batch norm, N(0, 0.02) weights), the
code head added after, as training adds it; Adam with beta1 0.5, trained on the IIC term alone
(`GANLoss.sorting_loss`, as training computes it):
each real batch and a randomly warped copy of it (`loss.info_warp`'s warps), one step a batch.
Printed every --every steps: the mutual information of the last batch (nats; ln K at best, K the
categories) and the one-to-one accuracy of the
sorting of all images against their labels (each category matched to one digit, Hungarian
matching; the measure of `category_digits.py --real`). It tells whether the clustering, not the
GAN, limits how well G's categories split the digits.

    python benchmarks/clustering_alone.py --root ../shared/data/mnist --split test --steps 3000 --every 500 --seeds 0 1 2
"""
from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from category_digits import counts_by_label, one_to_one_accuracy, sort_by_q, with_root_hint  # noqa: E402

from gankit.data.images import load_idx_dataset  # noqa: E402
from gankit.errors import UserError  # noqa: E402
from gankit.config import LossConfig  # noqa: E402
from gankit.losses import GANLoss  # noqa: E402
from gankit.models.dcgan import DCGAN28Discriminator  # noqa: E402
from gankit.models.mlp import init_weights  # noqa: E402


def run(images: torch.Tensor, labels: np.ndarray, args: argparse.Namespace,
        seed: int) -> Iterator[tuple[int, float, float]]:
    """(step, mutual information of the last batch, one-to-one accuracy) every args.every steps, as
    they come."""
    torch.manual_seed(seed)
    d = DCGAN28Discriminator(1, args.width, batch_norm=True)
    init_weights(d, "normal", 0.02)  # as build_dcgan initialises D (mnist-dcgan: init = "normal", 0.02)
    d.add_code_head(args.categories, args.hidden)  # after, with PyTorch's own init, as the trainer adds it
    opt = torch.optim.Adam(d.parameters(), args.lr, betas=(0.5, 0.999))
    # the preset's sorting term itself, at this script's warp strength (z_dim: unused, but asked for)
    sorting = GANLoss(LossConfig(info_weight=1.0, info_warp=args.warp, info_real=1.0), z_dim=1)
    generator = torch.Generator().manual_seed(seed)
    for step in range(1, args.steps + 1):
        real = images.index_select(0, torch.randint(len(images), (args.batch,), generator=generator))
        loss = sorting.sorting_loss(d, real, generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % args.every == 0 or step == args.steps:
            counts = counts_by_label(sort_by_q(d, images, args.batch), labels, args.categories, 10)
            yield step, -loss.item(), one_to_one_accuracy(counts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="data/mnist", help="folder of the MNIST IDX files")
    parser.add_argument("--split", default="test", choices=["train", "test", "all"])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--every", type=int, default=250, help="steps between accuracy reports")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-4, help="Adam's rate (mnist-dcgan's D: 2e-4)")
    parser.add_argument("--width", type=int, default=16, help="D's conv_width (mnist-dcgan: 16)")
    parser.add_argument("--hidden", type=int, default=0, help="the code head's hidden width (model.code_hidden)")
    parser.add_argument("--categories", type=int, default=10)
    parser.add_argument("--warp", type=float, default=1.0, help="the warps' strength (loss.info_warp)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if min(args.steps, args.every, args.batch, args.width, args.threads) < 1 or args.categories < 10:
        parser.exit(2, "clustering_alone.py: --steps, --every, --batch, --width and --threads must be at least 1, "
                       "--categories at least 10\n")
    if args.hidden < 0 or args.lr <= 0 or not 0 < args.warp <= 2:
        parser.exit(2, "clustering_alone.py: --hidden must be >= 0, --lr > 0 and --warp in (0, 2]\n")
    torch.set_num_threads(args.threads)
    try:
        source = load_idx_dataset("mnist", args.root, args.split, download=False)
    except UserError as error:
        parser.exit(2, f"clustering_alone.py: {with_root_hint(error, 'the folder of the MNIST IDX files')}\n")
    images, labels = source.scale(source.images), source.labels.numpy()
    for seed in args.seeds:
        start = time.perf_counter()
        for step, information, accuracy in run(images, labels, args, seed):
            print(f"seed {seed} step {step}: mutual information {information:.3f} nats, "
                  f"one-to-one accuracy {accuracy:.1%} ({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
