"""The Python facade: GAN(...).fit(X).sample(n), and loading a finished run."""
import numpy as np
import pytest

import gankit
from gankit.errors import UserError


def test_fit_an_array_then_sample_and_load(tmp_path):
    X = np.random.default_rng(0).normal([10.0, 0.0], [2.0, 0.5], size=(400, 2))
    gan = gankit.GAN("quadratic", settings={"train.steps": 20, "train.batch_size": 32, "model.g_hidden": [16]},
                     out=tmp_path / "run").fit(X)
    samples = gan.sample(100, seed=0)
    assert samples.shape == (100, 2) and samples.dtype == np.float32
    assert (tmp_path / "run" / "data.npy").exists()
    again = gankit.load(tmp_path / "run").sample(100, seed=0)
    assert np.array_equal(samples, again)


def test_fit_the_presets_own_data_in_a_temporary_run():
    gan = gankit.GAN("quadratic", settings={"train.steps": 10, "train.batch_size": 32}).fit()
    assert gan.run_dir.exists() and (gan.run_dir / "checkpoints" / "latest.pt").exists()
    assert gan.sample(7).shape == (7, 2)


def test_unfitted_and_bad_settings_are_clear_errors():
    with pytest.raises(UserError, match="not fitted"):
        gankit.GAN("quadratic").sample(3)
    with pytest.raises(UserError, match="did you mean 'steps'"):
        gankit.GAN("quadratic", settings={"train.stepz": 3})
    with pytest.raises(UserError, match="NaN"):
        gankit.GAN("quadratic", settings={"train.steps": 2}).fit(np.array([[1.0, np.nan], [0.0, 0.0]]))


def test_a_fitted_gan_scores_plots_and_shows_its_history():
    gan = gankit.GAN("quadratic", settings={"train.steps": 20, "train.batch_size": 32, "train.log_every": 10,
                                            "train.snapshot_every": 10}).fit()
    assert [r["step"] for r in gan.history() if "d_loss" in r] == [10, 20]
    scores = gan.evaluate(["mmd"], n=200)
    assert scores["n"] == 200 and np.isfinite(scores["mmd2"])
    made = gan.plot()
    assert made and all(p.is_file() for p in made) and any(p.name == "losses.png" for p in made)
    with pytest.raises(gankit.UserError, match="not fitted"):
        gankit.GAN("quadratic").evaluate()
