"""The probability view of a GAN on data whose density is known.

For a fixed G the best discriminator is D*(x) = p_data(x) / (p_data(x) + p_g(x)), and then
V(D*, G) = -log 4 + 2 JSD(p_data || p_g). p_data is known exactly; p_g is not, so it is estimated
from generated samples by a Gaussian kernel density estimate. Rules of thumb (Scott, Silverman)
take the bandwidth from the overall spread, which for 8 or 25 narrow modes is 10-20 times too
wide; so the bandwidth is the one that maximises the log-likelihood of held-out generated samples
(likelihood cross-validation), which adapts to modes of any width.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch

LOG2 = math.log(2.0)


def kde_log_density(points: torch.Tensor, centres: torch.Tensor, bandwidth: float, chunk: int = 4096) -> torch.Tensor:
    """log of (1/n) sum_i N(point; centre_i, bandwidth^2 I), in float64, chunked over points."""
    dim, n = centres.shape[1], len(centres)
    norm = -0.5 * dim * math.log(2 * math.pi * bandwidth**2) - math.log(n)
    out = []
    for part in points.split(chunk):
        sq = torch.cdist(part, centres) ** 2
        out.append(torch.logsumexp(-sq / (2 * bandwidth**2), dim=1) + norm)
    return torch.cat(out)


def select_bandwidth(fit: torch.Tensor, held_out: torch.Tensor, candidates: int = 30) -> float:
    """The bandwidth (on a log grid from 1/1000 to 1 of the samples' spread) whose KDE on `fit`
    gives `held_out` the highest mean log-likelihood."""
    spread = float(fit.std(0).mean()) or 1.0
    grid = spread * np.logspace(-3, 0, candidates)
    scores = [float(kde_log_density(held_out, fit, h).mean()) for h in grid]
    return float(grid[int(np.argmax(scores))])


class GeneratedDensity:
    """A KDE of p_g fitted on half of the generated samples; the other half is kept for estimates
    taken under p_g, so no sample is scored by a kernel centred on itself."""

    def __init__(self, samples: np.ndarray):
        x = torch.as_tensor(np.asarray(samples), dtype=torch.float64)
        x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]  # halves alike even if sorted
        half = len(x) // 2
        self.fit, self.held_out = x[:half], x[half:]
        self.bandwidth = select_bandwidth(self.fit, self.held_out)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return kde_log_density(x.to(torch.float64), self.fit, self.bandwidth)


def d_star(log_p_data: torch.Tensor, log_p_g: torch.Tensor) -> torch.Tensor:
    """p_data / (p_data + p_g), from log densities (stable where both are tiny)."""
    return torch.sigmoid(log_p_data - log_p_g)


def jsd(log_pd_real: torch.Tensor, log_pg_real: torch.Tensor, log_pd_fake: torch.Tensor,
        log_pg_fake: torch.Tensor) -> float:
    """Monte-Carlo JSD(p_data || p_g) in nats (0 to log 2), from densities at real and generated samples:
    1/2 E_data log(2 p_d / (p_d + p_g)) + 1/2 E_g log(2 p_g / (p_d + p_g))."""
    real_term = LOG2 + log_pd_real - torch.logaddexp(log_pd_real, log_pg_real)
    fake_term = LOG2 + log_pg_fake - torch.logaddexp(log_pd_fake, log_pg_fake)
    return float(0.5 * real_term.mean() + 0.5 * fake_term.mean())


def probability_view(log_p_data: Callable[[torch.Tensor], torch.Tensor], real: np.ndarray,
                     density: GeneratedDensity, d_prob: Callable[[np.ndarray], np.ndarray] | None) -> dict[str, float]:
    """JSD estimate, V(D, G) of the trained D (if given) beside V(D*, G) = -log 4 + 2 JSD, and the mean
    |sigmoid D - D*| over real and generated points."""
    real_t = torch.as_tensor(np.asarray(real), dtype=torch.float64)
    fake_t = density.held_out
    lpd_r, lpg_r = log_p_data(real_t), density.log_prob(real_t)
    lpd_f, lpg_f = log_p_data(fake_t), density.log_prob(fake_t)
    js = jsd(lpd_r, lpg_r, lpd_f, lpg_f)
    out = {"jsd": js, "value_d_star": -math.log(4) + 2 * js, "kde_bandwidth": density.bandwidth}
    if d_prob is not None:
        eps = 1e-12
        d_real = np.clip(d_prob(real_t.numpy()), eps, 1 - eps)
        d_fake = np.clip(d_prob(fake_t.numpy()), eps, 1 - eps)
        out["value_d"] = float(np.log(d_real).mean() + np.log(1 - d_fake).mean())
        star = torch.cat([d_star(lpd_r, lpg_r), d_star(lpd_f, lpg_f)]).numpy()
        out["d_star_error"] = float(np.abs(np.concatenate([d_real, d_fake]) - star).mean())
    return out


def probability_grid(log_p_data: Callable[[torch.Tensor], torch.Tensor], density: GeneratedDensity,
                     d_prob: Callable[[np.ndarray], np.ndarray] | None, low: np.ndarray, high: np.ndarray,
                     size: int = 120) -> dict[str, np.ndarray]:
    """sigmoid D, D* and both log densities on a size x size grid over [low, high] (2-D data)."""
    xs, ys = np.linspace(low[0], high[0], size), np.linspace(low[1], high[1], size)
    gx, gy = np.meshgrid(xs, ys)
    flat = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float64)
    lpd, lpg = log_p_data(flat), density.log_prob(flat)
    out = {"prob_x": xs, "prob_y": ys, "log_p_data": lpd.numpy().reshape(size, size),
           "log_p_g": lpg.numpy().reshape(size, size), "d_star": d_star(lpd, lpg).numpy().reshape(size, size)}
    if d_prob is not None:
        out["d_model"] = d_prob(flat.numpy()).reshape(size, size)
    return out
