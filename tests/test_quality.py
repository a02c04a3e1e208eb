"""Training actually learns: short seeded runs must reach quality bounds that a broken loss,
optimiser, normalisation or data path would miss (each bound sits far from an untrained G's score),
and the `points` recipe behind `gankit train FILE.npy` and `gankit.GAN().fit(X)`."""
from __future__ import annotations

import numpy as np
import pytest

import gankit
from gankit.cli import main
from gankit.errors import UserError
from gankit.metrics.evaluate import evaluate
from gankit.metrics.toy import mmd_permutation_test
from gankit.training import Trainer

NO_PICTURES = {"train.snapshot_every": 0, "viz.plot_at_end": False}


def test_the_quadratic_recipe_learns_the_curve_in_1500_steps():
    """Measured: curve error 0.015 and KS 0.018 after 1,500 steps; an untrained G scores 0.29 and 0.47."""
    gan = gankit.GAN("quadratic", settings={"train.steps": 1500, **NO_PICTURES}).fit()
    scores = evaluate(Trainer.resume(gan.run_dir).eval_target(), ["curve"], 2000, seed=0)
    assert scores["curve_error"] < 0.04  # median distance to the curve, as a share of its height
    assert scores["ks_x"] < 0.06  # x spread like U(-0.5, 0.5): no collapse onto part of the curve


def test_gan_fit_on_a_users_array_uses_the_points_recipe():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 3)) * [1.0, 50.0, 0.02] + [0.0, 1000.0, -5.0]
    gan = gankit.GAN(settings={"train.steps": 600, **NO_PICTURES}).fit(X)
    assert gan.config.preset == "points"
    samples = gan.sample(1500, seed=0)
    assert samples.shape == (1500, 3)
    # in the data's units, every scale learned (an untrained G gives scale ratios far from 1)
    np.testing.assert_allclose((samples.mean(0) - X.mean(0)) / X.std(0), 0.0, atol=0.2)
    np.testing.assert_allclose(samples.std(0) / X.std(0), 1.0, atol=0.25)


def test_the_points_recipe_needs_its_data(tmp_path):
    with pytest.raises(UserError, match="no points file given"):
        gankit.GAN(settings={"train.steps": 5}).fit()
    assert main(["train", "points", "--out", str(tmp_path / "run"), "--steps", "5"]) == 2
    assert not (tmp_path / "run").exists()


def test_gankit_train_a_points_file_trains_the_points_preset(tmp_path, capsys):
    rng = np.random.default_rng(1)
    np.savetxt(tmp_path / "mine.csv", rng.normal(size=(500, 2)), delimiter=",", header="a,b")
    assert main(["train", str(tmp_path / "mine.csv"), "--steps", "20", "--out", str(tmp_path / "run"),
                 "--quiet", "--no-plots"]) == 0
    config_text = (tmp_path / "run" / "config.toml").read_text()
    assert 'preset = "points"' in config_text and str(tmp_path / "mine.csv") in config_text


def test_the_mmd_test_holds_its_level_and_has_power():
    rng = np.random.default_rng(0)
    nulls = [mmd_permutation_test(rng.normal(size=(200, 2)), rng.normal(size=(200, 2)), 200, seed=i)["p_value"]
             for i in range(60)]
    assert 0.0 <= np.mean(np.array(nulls) < 0.05) <= 0.15  # about 5% false alarms at the 5% level
    shifted = mmd_permutation_test(rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) + [0.4, 0], 300, seed=1)
    assert shifted["p_value"] < 0.01 and shifted["mmd2"] > 0
    same = mmd_permutation_test(np.arange(10.0)[:, None], np.arange(10.0)[:, None], 99)
    assert same["p_value"] > 0.5
