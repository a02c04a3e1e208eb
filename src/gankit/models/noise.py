"""The generator's input distribution: z ~ U(-1, 1)^k (the source article) or N(0, I)."""
from __future__ import annotations

import torch


def sample_noise(n: int, z_dim: int, kind: str, generator: torch.Generator | None,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    if kind == "uniform":
        return torch.rand(n, z_dim, generator=generator, device=device) * 2.0 - 1.0
    return torch.randn(n, z_dim, generator=generator, device=device)
