"""Data sources: shapes, exact curves, known log-densities, and a user's files with their errors."""
import math

import numpy as np
import pytest
import torch
from scipy import stats

from gankit.data import make_source
from gankit.data.toy import Points, load_points
from gankit.errors import UserError


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


def test_quadratic_is_the_articles_curve():
    x = make_source("quadratic").sample(5000, rng())
    assert x.shape == (5000, 2) and x.dtype == torch.float32
    assert x[:, 0].min() >= -50 and x[:, 0].max() <= 50
    assert torch.allclose(x[:, 1], 10 + x[:, 0] ** 2)
    assert stats.kstest(x[:, 0].numpy(), stats.uniform(-50, 100).cdf).statistic < 0.03


def test_two_curves_split_evenly_and_sit_on_their_curves():
    src = make_source("two-curves")
    x = src.sample(4000, rng())
    upper = x[:, 1] > 0
    assert 0.45 < upper.float().mean() < 0.55
    assert torch.allclose(x[upper, 1], 10 + x[upper, 0] ** 2)
    assert torch.allclose(x[~upper, 1], -10 - x[~upper, 0] ** 2)
    assert src.curve_error(x).max() < 1e-3


@pytest.mark.parametrize("name,n_modes,radius_or_span,std", [("ring8", 8, 1.0, 0.01), ("grid25", 25, 4.0, 0.05)])
def test_mixtures_match_their_definition(name, n_modes, radius_or_span, std):
    src = make_source(name)
    assert len(src.centres) == n_modes and src.std == std
    x = src.sample(20000, rng())
    nearest = torch.cdist(x, src.centres).min(1).values
    assert (nearest < 3 * std).float().mean() > 0.985  # 3-std disc holds 98.9% of a 2-D Gaussian


def test_ring8_centres_lie_on_the_unit_circle():
    centres = make_source("ring8").centres
    assert torch.allclose(centres.norm(dim=1), torch.ones(8), atol=1e-6)


def test_grid25_centres_are_the_grid():
    centres = {tuple(c.tolist()) for c in make_source("grid25").centres}
    assert centres == {(a, b) for a in (-4.0, -2.0, 0.0, 2.0, 4.0) for b in (-4.0, -2.0, 0.0, 2.0, 4.0)}


@pytest.mark.parametrize("name", ["ring8", "grid25"])
def test_mixture_log_prob_matches_scipy(name):
    src = make_source(name)
    x = src.sample(50, rng(1)) + 0.02 * torch.randn(50, 2, generator=rng(2))
    expected = np.log(np.mean([stats.multivariate_normal(c.numpy(), src.std**2).pdf(x.numpy())
                               for c in src.centres], axis=0))
    assert np.allclose(src.log_prob(x).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_ring8_density_integrates_to_one():
    src = make_source("ring8")
    g = torch.linspace(-1.2, 1.2, 1201)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    dens = src.log_prob(torch.stack([xx.ravel(), yy.ravel()], 1).double()).exp()
    cell = (g[1] - g[0]).item() ** 2
    assert dens.sum().item() * cell == pytest.approx(1.0, rel=1e-2)


def test_curve_sources_have_no_density():
    with pytest.raises(NotImplementedError):
        make_source("quadratic").log_prob(torch.zeros(1, 2))


def test_points_from_npy_and_csv(tmp_path):
    arr = np.random.default_rng(0).normal(size=(100, 3))
    np.save(tmp_path / "p.npy", arr)
    np.savetxt(tmp_path / "p.csv", arr, delimiter=",")
    np.savetxt(tmp_path / "h.csv", arr, delimiter=",", header="a,b,c", comments="")
    for name in ("p.npy", "p.csv", "h.csv"):
        src = make_source(f"points:{tmp_path / name}")
        assert src.dim == 3
        batch = src.sample(10, rng())
        assert batch.shape == (10, 3)
        assert np.allclose(src.data.numpy(), arr, atol=1e-5)


def test_points_moments_are_the_datas():
    arr = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 2))
    mean, std = Points(arr).moments()
    assert np.allclose(mean.numpy(), arr.mean(0), atol=1e-5)
    assert np.allclose(std.numpy(), arr.std(0, ddof=1), atol=1e-4)


@pytest.mark.parametrize("array,message", [
    (np.array([[1.0, np.nan], [2.0, 3.0]]), "NaN"),
    (np.zeros((0, 2)), "at least 2 points"),
    (np.zeros((4, 2, 2)), "shape"),
])
def test_bad_points_are_refused(tmp_path, array, message):
    np.save(tmp_path / "bad.npy", array)
    with pytest.raises(UserError, match=message):
        load_points(str(tmp_path / "bad.npy"))


def test_bad_points_files_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_points(str(tmp_path / "missing.npy"))
    (tmp_path / "p.txt").write_text("1,2\n")
    with pytest.raises(UserError, match=".npy or .csv"):
        load_points(str(tmp_path / "p.txt"))
    (tmp_path / "corrupt.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(UserError, match="cannot be read"):
        load_points(str(tmp_path / "corrupt.npy"))
    (tmp_path / "words.csv").write_text("a,b\nc,d\n")
    with pytest.raises(UserError, match="cannot be read"):
        load_points(str(tmp_path / "words.csv"))


def test_unknown_dataset_lists_the_valid_ones():
    with pytest.raises(UserError, match="ring8"):
        make_source("ring9")


def test_sampling_is_reproducible():
    a = make_source("grid25").sample(100, rng(7))
    b = make_source("grid25").sample(100, rng(7))
    assert torch.equal(a, b)
    assert not math.isclose(a.sum().item(), make_source("grid25").sample(100, rng(8)).sum().item())
