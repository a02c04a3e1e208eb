"""What a checkpoint needs beyond weights: the data scale and every random-number state; and the way
back from the generator's output to what a user sees."""
from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from gankit.data.images import to_uint8


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
