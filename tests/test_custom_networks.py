"""Your own G and D as plain nn.Modules, and data as a tensor or a torch Dataset, through gankit.GAN."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import gankit
from gankit.cli import main

NO_PICTURES = {"train.snapshot_every": 0, "viz.plot_at_end": False}


def mlp(inputs: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, 64), nn.LeakyReLU(0.2), nn.Linear(64, 64), nn.LeakyReLU(0.2),
                         nn.Linear(64, outputs))


class Rings(torch.utils.data.Dataset):
    """A map-style Dataset of (point, label) pairs: a ring of radius 3 around (10, -5)."""

    def __init__(self, n: int):
        angle = torch.rand(n, generator=torch.Generator().manual_seed(0)) * 2 * torch.pi
        self.points = torch.stack([10 + 3 * angle.cos(), -5 + 3 * angle.sin()], 1)

    def __len__(self):
        return len(self.points)

    def __getitem__(self, i):
        return self.points[i], 0


def test_plain_modules_train_resume_evaluate_and_reload(tmp_path, capsys):
    G, D = mlp(8, 2), mlp(2, 1)
    first_weight = G[0].weight.detach().clone()
    run = tmp_path / "mine"
    gan = gankit.GAN(settings={"model.z_dim": 8, "train.steps": 800, **NO_PICTURES}, out=run,
                     generator=G, discriminator=D).fit(Rings(3000))
    torch.testing.assert_close(G[0].weight, first_weight)  # the caller's modules are left as they were
    samples = gan.sample(1000, seed=0)
    radius = np.hypot(samples[:, 0] - 10, samples[:, 1] + 5)
    assert abs(np.median(radius) - 3) < 0.6  # learned the ring, in the data's units
    assert "mmd2" in gan.evaluate(["mmd"], n=300)
    again = gankit.load(run, generator=mlp(8, 2), discriminator=mlp(2, 1))
    np.testing.assert_array_equal(again.sample(50, seed=1), gan.sample(50, seed=1))
    # resumed in this process, where the modules are known (steps counted on from the checkpoint)
    assert main(["resume", str(run), "--steps", "850", "--quiet", "--no-plots"]) == 0
    assert gankit.load(run, generator=mlp(8, 2), discriminator=mlp(2, 1)).history()[-1]["step"] == 850


def test_the_cli_without_the_modules_names_the_fix(tmp_path, capsys):
    from gankit.models import MODELS

    gankit.GAN(settings={"model.z_dim": 8, "train.steps": 5, **NO_PICTURES}, out=tmp_path / "run",
               generator=mlp(8, 2), discriminator=mlp(2, 1)).fit(np.random.default_rng(0).normal(size=(300, 2)))
    MODELS.register("python", replace=True)(_placeholder())  # as in a fresh process
    assert main(["sample", str(tmp_path / "run"), "-n", "5", "--out", str(tmp_path / "s.npy")]) == 2
    assert "gankit.load(RUN, generator=G, discriminator=D)" in capsys.readouterr().err


def _placeholder():
    import gankit.models as models

    return models._python_networks_not_here


def test_networks_that_do_not_fit_the_data_are_refused_in_one_line():
    X = np.random.default_rng(0).normal(size=(300, 3))
    with pytest.raises(gankit.UserError, match="makes samples shaped"):
        gankit.GAN(settings={"model.z_dim": 8, "train.steps": 2}, generator=mlp(8, 2), discriminator=mlp(3, 1)).fit(X)
    with pytest.raises(gankit.UserError, match="model.z_dim"):
        gankit.GAN(settings={"model.z_dim": 4, "train.steps": 2}, generator=mlp(8, 3), discriminator=mlp(3, 1)).fit(X)
    with pytest.raises(gankit.UserError, match="one logit per sample"):
        gankit.GAN(settings={"model.z_dim": 8, "train.steps": 2}, generator=mlp(8, 3), discriminator=mlp(3, 2)).fit(X)
    with pytest.raises(gankit.UserError, match="both generator= and discriminator="):
        gankit.GAN(generator=mlp(8, 3))


def test_image_tensors_train_a_conv_pair(tmp_path):
    """(N, C, H, W) floats in [0, 1] with a small convolutional G and D of the user's."""
    G = nn.Sequential(nn.Linear(16, 8 * 7 * 7), nn.Unflatten(1, (8, 7, 7)), nn.ReLU(),
                      nn.ConvTranspose2d(8, 4, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(4, 1, 4, 2, 1), nn.Tanh())
    D = nn.Sequential(nn.Conv2d(1, 4, 4, 2, 1), nn.LeakyReLU(0.2), nn.Conv2d(4, 8, 4, 2, 1), nn.LeakyReLU(0.2),
                      nn.Flatten(), nn.Linear(8 * 7 * 7, 1))
    images = torch.rand(64, 1, 28, 28)
    gan = gankit.GAN("mnist-dcgan", settings={"model.z_dim": 16, "train.steps": 3, "train.batch_size": 16,
                                              **NO_PICTURES}, out=tmp_path / "img", generator=G, discriminator=D)
    # the preset's InfoGAN categories, G's batch norms by category and their mode-seeking cure are
    # gankit's own networks': off with the user's
    m, lo = gan.config.model, gan.config.loss
    off = (m.z_categories, m.code_batch_norm, lo.info_weight, lo.info_warp, lo.info_real, lo.mode_seeking)
    assert off == (0, False, 0.0, 0.0, 0.0, 0.0)
    made = gan.fit(images).sample(5, seed=0)
    assert made.shape == (5, 28, 28, 1) and made.dtype == np.uint8
    assert (tmp_path / "img" / "data.npz").is_file()
    kept = gankit.GAN("mnist-dcgan", settings={"loss.mode_seeking": 0.5}, generator=G, discriminator=D)
    assert kept.config.loss.mode_seeking == 0.5  # what the user sets is kept
    annealed = gankit.GAN("mnist-dcgan", settings={"loss.mode_seeking_anneal": 100}, generator=G, discriminator=D)
    assert annealed.config.loss.mode_seeking == 0.01  # annealing asked for: the preset's term is kept to anneal
    from gankit import config
    from gankit.api import _preset_code_off
    from gankit.presets import load_preset

    warped = load_preset("mnist-dcgan")  # a preset with Q's warps
    off = config.with_overrides(warped, _preset_code_off(warped, {}))  # they go with Q, whatever else is set
    assert (off.loss.info_weight, off.loss.info_warp, off.loss.info_real) == (0.0, 0.0, 0.0)
    q_off = {"loss.info_weight": "0"}  # the user turns Q off: its warps and its sorting of real images go too
    off = config.with_overrides(warped, [*_preset_code_off(warped, q_off), "loss.info_weight=0"])
    assert (off.loss.info_warp, off.loss.info_real) == (0.0, 0.0)
    q_kept = {"loss.info_weight": 2}  # the user keeps Q: its warps stay (their D then needs a code head)
    assert not {"loss.info_warp=0", "loss.info_real=0"} & set(_preset_code_off(warped, q_kept))


def test_two_gans_with_their_own_modules_each_train_their_own(tmp_path):
    X = np.random.default_rng(0).normal(size=(300, 2))
    settings = {"model.z_dim": 8, "train.steps": 5, **NO_PICTURES}
    small = gankit.GAN(settings=settings, out=tmp_path / "small", generator=mlp(8, 2), discriminator=mlp(2, 1))
    wide_g = nn.Sequential(nn.Linear(8, 256), nn.LeakyReLU(0.2), nn.Linear(256, 2))
    wide = gankit.GAN(settings=settings, out=tmp_path / "wide", generator=wide_g, discriminator=mlp(2, 1))
    small.fit(X)  # after `wide` registered its modules: `small` still trains its own
    wide.fit(X)
    count = lambda gan: sum(p.numel() for p in gan.sampler.generator.parameters())  # noqa: E731
    assert count(small) == sum(p.numel() for p in mlp(8, 2).parameters())
    assert count(wide) == sum(p.numel() for p in wide_g.parameters())
    assert "mmd2" in small.evaluate(["mmd"], n=100)


def test_a_plain_discriminator_refuses_packing():
    with pytest.raises(gankit.UserError, match="model.pack = 4"):
        gankit.GAN(settings={"model.z_dim": 8, "model.pack": 4, "train.steps": 2}, generator=mlp(8, 2),
                   discriminator=mlp(2, 1)).fit(np.zeros((300, 2)))


def test_a_preset_with_infogan_categories_takes_plain_networks_without_them(tmp_path):
    """ring8 gives G 8 categories and D a code head; the user's D has none, so the preset's term is off
    and G takes z_dim-wide noise. Asked for explicitly, the term gets a clear error instead."""
    X = np.random.default_rng(0).normal(size=(200, 2))
    settings = {"train.steps": 2, "train.batch_size": 32, "model.pack": 1, **NO_PICTURES}
    gan = gankit.GAN("ring8", settings=settings, out=tmp_path / "r", generator=mlp(2, 2), discriminator=mlp(2, 1))
    assert gan.config.loss.info_weight == 0 and gan.config.model.z_categories == 0
    assert gan.fit(X).sample(4).shape == (4, 2)
    asked = gankit.GAN("ring8", settings={**settings, "loss.info_weight": 0.2}, out=tmp_path / "a",
                       generator=mlp(10, 2), discriminator=mlp(2, 1))
    with pytest.raises(gankit.UserError, match="set loss.info_weight = 0 for networks passed from Python"):
        asked.fit(X)
