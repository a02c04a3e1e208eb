"""Shared fixtures: tiny configs that train in well under a second."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest
import torch

from gankit import config

# tests run in one worker per core (pytest-xdist), some beside a CLI subprocess: one thread each
# keeps them from thrashing the cores
torch.set_num_threads(1)

TINY = [
    "train.steps=20", "train.batch_size=32", "train.log_every=5", "train.snapshot_every=10",
    "train.checkpoint_every=10", "model.g_hidden=[16, 16]", "model.d_hidden=[16, 16]",
    "viz.n_points=64", "viz.grid_size=12", "train.drs_steps=0",
]


@pytest.fixture
def tiny_cfg() -> config.RunConfig:
    from gankit.presets import load_preset

    return config.with_overrides(load_preset("quadratic"), TINY)


SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
needs_shared_mnist = pytest.mark.skipif(
    not all((SHARED_MNIST / f).is_file() for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")),
    reason=f"needs the MNIST test set in {SHARED_MNIST} (../shared/data/mnist beside the checkout): not found")


@pytest.fixture(autouse=True, scope="session")
def temporary_files_stay_in_pytests_folder(tmp_path_factory):
    """Runs made without an out folder (GAN().fit(), subprocesses) go to pytest's own temporary
    folder, which pytest prunes, instead of piling up in the system's; so does gankit's cache."""
    folder = str(tmp_path_factory.mktemp("tmp"))
    saved = tempfile.tempdir, os.environ.get("TMPDIR"), os.environ.get("GANKIT_CACHE")
    tempfile.tempdir, os.environ["TMPDIR"] = folder, folder
    # gankit's cache (real images' features, this machine's precision probe) starts empty: tests
    # never depend on, or write into, the user's ~/.cache/gankit
    os.environ["GANKIT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    tempfile.tempdir = saved[0]
    for name, value in (("TMPDIR", saved[1]), ("GANKIT_CACHE", saved[2])):
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def digest(folder: Path, skip_lock: bool = True) -> dict[str, str]:
    """Every file below folder -> SHA-256 of its bytes. The lock file of a run names the process that
    last held it (a command refused for a bad value may still have held the run): skipped by default."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*"))
            if p.is_file() and not (skip_lock and p.name == ".gankit-lock")}


def sigma(layer: torch.nn.Module) -> float:
    """The largest singular value of a layer's weight, reshaped to (out, in * kernel) as spectral norm sees it."""
    w = layer.weight.detach()
    return torch.linalg.matrix_norm(w.reshape(w.shape[0], -1), ord=2).item()


def power_iterate(d: torch.nn.Module, x: torch.Tensor, n: int = 30) -> None:
    d.train()  # torch's spectral norm runs one power iteration per forward pass in train mode
    with torch.no_grad():
        for _ in range(n):
            d(x)
    d.eval()
