"""What a checkpoint needs beyond weights: the data scale and every random-number state; and the way
back from the generator's output to what a user sees."""
from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch
from torch import nn

from gankit.config import ModelConfig
from gankit.data.images import to_uint8
from gankit.models.base import has_batch_norm
from gankit.models.noise import sample_noise


class Normalizer:
    """Per-coordinate standardisation; the generator works in normalised units."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        self.mean, self.std = mean.float(), std.float()

    @classmethod
    def identity(cls, dim: int) -> "Normalizer":
        return cls(torch.zeros(dim), torch.ones(dim))

    def to_model(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)

    def to_data(self, y: torch.Tensor) -> torch.Tensor:
        return y * self.std.to(y.device) + self.mean.to(y.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}


def output_to_data(x: torch.Tensor, norm: Normalizer, image_output: str | None = None) -> np.ndarray:
    """G's output as the user gets it: images (when image_output names G's output activation) as
    uint8 (N, H, W, C); vectors as float32 (N, dim) in the data's units."""
    if image_output is not None:
        return to_uint8(x, image_output).transpose(0, 2, 3, 1)
    return norm.to_data(x).cpu().numpy().astype(np.float32)


def capture_rng(data_rng: torch.Generator, noise_rng: torch.Generator) -> dict[str, Any]:
    """Every random state a run touches, in types that torch.load(weights_only=True) accepts."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "data": data_rng.get_state(),
        "noise": noise_rng.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": list(py_state[1]),
        "python_version": py_state[0],
        "python_gauss": py_state[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": [int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }


def restore_rng(rng: dict[str, Any], data_rng: torch.Generator, noise_rng: torch.Generator) -> None:
    data_rng.set_state(rng["data"])
    noise_rng.set_state(rng["noise"])
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    random.setstate((rng["python_version"], tuple(rng["python"]), rng["python_gauss"]))
    pos = rng["numpy_pos"]
    np.random.set_state(("MT19937", rng["numpy"].numpy().astype(np.uint32), pos[0], pos[1], pos[2]))


@torch.no_grad()
def measure_batch_norm(g: nn.Module, latent: ModelConfig, num_classes: int, batches: int = 8,
                       batch_size: int = 256, seed: int = 0) -> nn.Module:
    """A copy of G whose batch-norm running statistics are measured on its own outputs.

    An EMA of G averages the live G's running statistics along with its weights, but statistics
    of past weights do not describe the averaged weights' activations; so before an EMA G samples,
    its statistics are re-measured: the exact mean over `batches` batches of fixed noise (momentum
    None), in train mode, without gradients. G itself is returned when it has no batch norm; its
    own training state and every global random stream are left untouched."""
    if not has_batch_norm(g):
        return g
    g = copy.deepcopy(g)
    for m in g.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average: every batch counts equally
    device = next(g.parameters()).device
    rng = torch.Generator().manual_seed(seed)
    g.train()
    for _ in range(batches):
        z = sample_noise(batch_size, latent, rng).to(device)
        labels = torch.randint(num_classes, (batch_size,), generator=rng).to(device) if num_classes else None
        g(z, labels)
    return g.eval()
