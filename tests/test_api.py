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
