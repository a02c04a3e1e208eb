"""Snapshots: the arrays behind the pictures, taken at train.snapshot_every steps from the same real
data, noise and labels every time (so pictures compare across steps) and saved as
snapshots/step-N.npz. Vector runs: G's points and D's feature layer before and after each update of
the step, and D's decision surface on 2-D data (the article's views). Image runs: the sampling
generator's fixed-noise grid."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from gankit.data.images import to_uint8
from gankit.models.base import eval_mode
from gankit.models.noise import sample_noise
from gankit.training.views import decision_grid, features

if TYPE_CHECKING:
    from gankit.training.trainer import Trainer


class Snapshots:
    def __init__(self, run: "Trainer"):
        self.run = run
        self.real, self.z, self.labels = self._fixed_inputs()

    def _fixed_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Images: 64 for a grid, or 8 per class (one row each) when conditional. Vectors: viz.n_points
        (a multiple of PacGAN's pack)."""
        run = self.run
        pack, rng = run.cfg.model.pack, torch.Generator().manual_seed(run.cfg.train.seed + 3)
        if run.is_image:
            n = 8 * run.num_classes if run.num_classes else 64
        else:
            n = run.cfg.viz.n_points // pack * pack or pack
        real, _ = run.source.sample_labeled(n, rng)
        z = sample_noise(n, run.cfg.model, rng).to(run.device)
        labels = torch.arange(run.num_classes).repeat_interleave(8).to(run.device) if run.num_classes else None
        return real, z, labels

    def due(self, step: int, total: int) -> bool:
        every = self.run.cfg.train.snapshot_every
        return every > 0 and (step == 1 or step % every == 0 or step == total)

    @torch.no_grad()
    def views(self, d_tag: str, g_tag: str, with_grid: bool = False) -> dict[str, np.ndarray]:
        """The article's pictures at one moment of the step. Eval mode: batch-norm statistics do not
        move and dropout draws no random numbers, so snapshots leave training bit for bit the same."""
        run = self.run
        with eval_mode(run.g), eval_mode(run.d):
            fake_model = run.g(self.z)
            real_model = run.norm.to_model(self.real.to(run.device))
            out = {
                f"fake_{g_tag}": run.norm.to_data(fake_model).cpu().numpy(),
                f"feat_real_{d_tag}": features(run.d, real_model),
                f"feat_fake_{d_tag}_{g_tag}": features(run.d, fake_model),
            }
            if with_grid and run.source.dim == 2 and run.cfg.model.pack == 1:
                points = np.concatenate([self.real.numpy(), out[f"fake_{g_tag}"]])
                out.update(decision_grid(run.d, run.norm.to_model, points, run.cfg.viz.grid_size, run.device))
        return out

    @torch.no_grad()
    def images(self, z: torch.Tensor, labels: torch.Tensor | None) -> np.ndarray:
        """uint8 (N, C, H, W) from the sampling generator in eval mode: what `gankit sample` gives."""
        run = self.run
        with eval_mode(run.sampler_g) as g:
            return to_uint8(g(z, labels), run.cfg.model.g_output)

    def save(self, views: dict[str, np.ndarray]) -> None:
        run = self.run
        folder = run.run_dir / "snapshots"
        folder.mkdir(exist_ok=True)
        real = to_uint8(self.real, run.cfg.model.g_output) if run.is_image else self.real.numpy()
        extra = {"labels": self.labels.cpu().numpy()} if self.labels is not None else {}
        np.savez_compressed(folder / f"step-{run.step:06d}.npz", step=run.step, real=real, **views, **extra)
        if run.log.tensorboard is not None and "images" in views:
            run.log.tensorboard.images(run.step, views["images"])
