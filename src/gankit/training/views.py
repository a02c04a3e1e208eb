"""Snapshots of what the two networks do, saved for the article's pictures.

At a snapshot step the trainer records D's feature-layer output for fixed real and generated
points at three moments: before the D update (D0, G0), after it (D1, G0, which is also before the
G update) and after the G update (D1, G1); plus sigmoid D over a grid of the data plane. The plots
read these arrays from the run directory and never need the networks.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn


@torch.no_grad()
def features(d: nn.Module, x: torch.Tensor) -> np.ndarray:
    return d.features(x).float().cpu().numpy()


@torch.no_grad()
def decision_grid(d: nn.Module, to_model, points: np.ndarray, size: int, device: torch.device) -> dict[str, np.ndarray]:
    """sigmoid D on a size x size grid covering `points` (data units) with a margin."""
    low, high = points.min(0), points.max(0)
    pad = 0.15 * (high - low) + 1e-6
    xs = np.linspace(low[0] - pad[0], high[0] + pad[0], size)
    ys = np.linspace(low[1] - pad[1], high[1] + pad[1], size)
    gx, gy = np.meshgrid(xs, ys)
    flat = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], 1), dtype=torch.float32, device=device)
    prob = torch.sigmoid(d(to_model(flat))).float().cpu().numpy().reshape(size, size)
    return {"grid_x": xs, "grid_y": ys, "grid_d": prob}
