"""The notebook facade, scikit-learn style: `GAN("quadratic").fit(X).sample(1000)`.

Every fit writes a normal run directory (a temporary one unless `out` is given), so a run made
from Python can be plotted, resumed and sampled from the CLI too.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gankit import config as config_mod
from gankit.config import RunConfig
from gankit.data.toy import validate_points
from gankit.errors import UserError
from gankit.models import MODELS
from gankit.models.noise import sample_noise
from gankit.training import checkpoint as ckpt


class GAN:
    """A GAN built from a preset (or a RunConfig) plus `settings` such as {"train.steps": 500}."""

    def __init__(self, preset: str | RunConfig = "quadratic", settings: dict[str, Any] | None = None,
                 out: str | Path | None = None, progress: bool = False):
        from gankit.presets import load_preset  # presets import config only; kept local for clarity

        cfg = preset if isinstance(preset, RunConfig) else load_preset(preset)
        items = [f"{k}={config_mod.toml_value(v)}" for k, v in (settings or {}).items()]
        self.config: RunConfig = config_mod.with_overrides(cfg, items)
        self.out, self.progress = out, progress
        self.run_dir: Path | None = None
        self._sampler: Sampler | None = None

    def fit(self, X: np.ndarray | None = None) -> "GAN":
        """Train on X (an (n, dim) array) or, with X None, on the config's dataset."""
        from gankit.training import Trainer

        run_dir = Path(self.out) if self.out else Path(tempfile.mkdtemp(prefix="gankit-run-"))
        cfg = self.config
        if X is not None:
            run_dir.mkdir(parents=True, exist_ok=True)
            data_file = run_dir / "data.npy"
            np.save(data_file, validate_points(X, "X").astype(np.float32))
            cfg = config_mod.replace(cfg, "data", name=f"points:{data_file.resolve()}")
        trainer = Trainer(cfg, run_dir).fit(progress=self.progress)
        self.config, self.run_dir = cfg, run_dir
        self._sampler = Sampler.from_state(trainer.state_dict())
        return self

    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        """n generated vectors, float32, in the data's own units."""
        if self._sampler is None:
            raise UserError("this GAN is not fitted yet: call fit() or gankit.load(RUN_DIR) first")
        return self._sampler.sample(n, seed)

    @classmethod
    def load(cls, path: str | Path) -> "GAN":
        """A trained GAN from a run directory or checkpoint file, ready to sample."""
        file = ckpt.find_checkpoint(path)
        state = ckpt.load_checkpoint(file)
        try:
            sampler = Sampler.from_state(state)
        except ckpt.STATE_ERRORS as exc:
            raise ckpt.incompatible(file, exc) from exc
        gan = cls(sampler.config)
        path = Path(path)
        gan.run_dir = path if path.is_dir() else path.parent.parent
        gan._sampler = sampler
        return gan


def load(path: str | Path) -> GAN:
    return GAN.load(path)


@dataclasses.dataclass
class Sampler:
    """Just what sampling needs: the generator (EMA when trained with it) and the data scale."""

    config: RunConfig
    generator: nn.Module
    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "Sampler":
        cfg = config_mod.loads(state["config"], source="the config inside the checkpoint")
        g, _ = MODELS.get(cfg.model.name)(cfg.model, int(state["data_dim"]))
        if state.get("ema") is not None:
            weights = {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
        else:
            weights = state["g"]
        g.load_state_dict(weights)
        return cls(cfg, g.eval(), state["norm"]["mean"], state["norm"]["std"])

    @torch.no_grad()
    def sample(self, n: int, seed: int | None = None) -> np.ndarray:
        if n < 1:
            raise UserError(f"number of samples must be >= 1, got {n}")
        rng = torch.Generator().manual_seed(seed) if seed is not None else None
        device = next(self.generator.parameters()).device
        z = sample_noise(n, self.config.model.z_dim, self.config.model.noise, rng).to(device)
        out = self.generator(z).cpu() * self.std + self.mean
        return out.numpy().astype(np.float32)

