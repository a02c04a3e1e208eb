"""What every gankit network shares: optional class conditioning and a logit from features.

A generator maps z (and a label, when conditional) to a sample. A discriminator computes a feature
vector h(x) and returns the logit w.h + b, plus <embed(y), h> when conditional: the projection
discriminator of Miyato & Koyama (2018).
"""
from __future__ import annotations

import torch
from torch import nn


class Generator(nn.Module):
    """Subclasses define `decode(inputs)`; inputs are z, with a label embedding appended when conditional."""

    def __init__(self, z_dim: int, num_classes: int = 0, embed_dim: int = 0):
        super().__init__()
        self.z_dim, self.num_classes = z_dim, num_classes
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes else None
        self.in_dim = z_dim + (embed_dim if num_classes else 0)

    def decode(self, inputs: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.embed is not None:
            if y is None:
                raise ValueError("a conditional generator needs labels")
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.decode(z)


class Discriminator(nn.Module):
    """Subclasses define `features(x)` (with PacGAN packing applied) and set `feature_dim`."""

    pack = 1
    joint_batch = True  # real and generated batches may share one forward pass (False with batch norm)

    def init_head(self, feature_dim: int, num_classes: int) -> None:
        self.logit = nn.Linear(feature_dim, 1)
        self.project = nn.Embedding(num_classes, feature_dim) if num_classes else None


    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.features(x)
        out = self.logit(h).squeeze(1)
        if self.project is not None:
            if y is None:
                raise ValueError("a conditional discriminator needs labels")
            out = out + (self.project(y[:: self.pack]) * h).sum(1)
        return out
