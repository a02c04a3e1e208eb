"""The generator's input distribution.

Continuous part: z ~ U(-1, 1)^k (the source article) or N(0, I), k = model.z_dim, times
model.z_std. Optionally a discrete part (model.z_categories = K > 0): a category drawn uniformly
from K, given to G as a one-hot code after the continuous coordinates. A continuous G maps a
connected latent space onto a connected set, so between two separated modes it must put some
samples; a categorical code lets each category land on one mode with no bridge between them (a
latent with discrete structure, as in InfoGAN's codes). Alone, G may ignore the code;
loss.info_weight adds InfoGAN's mutual-information term, which makes each category recognisable in
the samples.

Truncation (sampling only, never training): the continuous part drawn as in training, then scaled
by psi < 1, so G is asked for images nearer the middle of what it learned to draw. Scaling keeps
the draws of psi = 1 to the bit, and for a seed the same points move in along their rays.
"""
from __future__ import annotations

import math

import torch

from gankit.config import ModelConfig
from gankit.errors import UserError


def latent_width(m: ModelConfig) -> int:
    """The width of G's input: the continuous coordinates plus the one-hot code."""
    return m.z_dim + m.z_categories


def sample_noise(n: int, m: ModelConfig, generator: torch.Generator | None,
                 device: torch.device | str = "cpu", truncation: float = 1.0) -> torch.Tensor:
    if m.noise == "uniform":
        z = torch.rand(n, m.z_dim, generator=generator, device=device) * 2.0 - 1.0
    else:
        z = torch.randn(n, m.z_dim, generator=generator, device=device)
    z = z * (m.z_std * truncation)
    if not m.z_categories:
        return z
    category = torch.randint(m.z_categories, (n,), generator=generator, device=device)
    return torch.cat([z, torch.nn.functional.one_hot(category, m.z_categories).to(z.dtype)], dim=1)


def categories_of(z: torch.Tensor, z_dim: int) -> torch.Tensor:
    """The category each latent row carries (its one-hot code after the z_dim continuous coordinates)."""
    return z[:, z_dim:].argmax(1)


def groups_of(z: torch.Tensor, z_dim: int, labels: torch.Tensor | None) -> torch.Tensor | None:
    """What each generated sample belongs to: its latent's category when z carries a one-hot code
    after its z_dim continuous coordinates, else its class label (None for neither)."""
    return categories_of(z, z_dim) if z.shape[1] > z_dim else labels


MAX_TRUNCATION = 100.0  # far past any use: G never saw noise beyond a few times model.z_std


def check_truncation(psi: float, through_critic: bool = False) -> None:
    """Refuse a truncation psi that is no scale of G's noise (1: the noise G was trained on), and
    any psi != 1 for samples that go through a rejection critic, which judged G's own draws."""
    if not (math.isfinite(psi) and 0 < psi <= MAX_TRUNCATION):
        raise UserError(f"--truncation {psi:g} is not a scale of G's noise; give a number above 0 and at most "
                        f"{MAX_TRUNCATION:g} (1: the noise G was trained on; 0.8: samples nearer the middle, less varied)")
    if psi != 1.0 and through_critic:
        raise UserError("--truncation scales G's own noise, and this run's samples go through its rejection "
                        "critic; add --raw (raw=True in Python) to truncate G's samples")
