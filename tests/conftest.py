"""Shared fixtures: tiny configs that train in well under a second."""
from __future__ import annotations

import pytest
import torch

from gankit import config

torch.set_num_threads(1)  # tests may run beside a CLI subprocess; 1 thread each avoids thrashing

TINY = [
    "train.steps=20", "train.batch_size=32", "train.log_every=5", "train.snapshot_every=10",
    "train.checkpoint_every=10", "model.g_hidden=[16, 16]", "model.d_hidden=[16, 16]",
    "viz.n_points=64", "viz.grid_size=12", "train.drs_steps=0",
]


@pytest.fixture
def tiny_cfg() -> config.RunConfig:
    from gankit.presets import load_preset

    return config.with_overrides(load_preset("quadratic"), TINY)
