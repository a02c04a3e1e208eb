"""Every metric against an independent computation or a known answer."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import linalg, stats
from scipy.spatial.distance import jensenshannon

from gankit.data.toy import grid25, ring8
from gankit.metrics import features as F
from gankit.metrics import probability as P
from gankit.metrics import toy as T


@pytest.fixture(scope="module")
def feats():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(600, 16))
    fake = rng.normal(size=(500, 16)) * 1.2 + 0.3
    return real, fake


# --------------------------------------------------------------------------- toy metrics

@pytest.mark.parametrize("make", [ring8, grid25])
def test_samples_from_the_data_score_like_a_perfect_sampler(make):
    source = make()
    x = source.sample(2500, torch.Generator().manual_seed(1)).numpy()
    s = T.mixture_scores(x, source.centres.numpy(), source.std)
    assert s["modes"] == len(source.centres)
    assert abs(s["high_quality"] - 0.989) < 0.008  # binomial s.e. at n=2500 is 0.002
    assert s["reverse_kl"] < 0.02
    assert s["mode_spread"] == pytest.approx(1.0, abs=0.03)  # the data's own spread
    assert abs(T.perfect_high_quality() - (1 - math.exp(-4.5))) < 1e-12


def test_mode_spread_sees_modes_shrunk_towards_their_centres():
    """Every sample pulled halfway to its centre still scores as high quality, more of it even; the
    spread says the modes are half as wide as the data's."""
    source = grid25()
    x = source.sample(5000, torch.Generator().manual_seed(2))
    centres = source.centres
    nearest = torch.cdist(x, centres).argmin(1)
    shrunk = (centres[nearest] + 0.5 * (x - centres[nearest])).numpy()
    s = T.mixture_scores(shrunk, centres.numpy(), source.std)
    assert s["high_quality"] > 0.999
    # every data sample, its distance halved (E r^2 = 2 std^2 / 4), against the data within 3 std (1.899 std^2)
    assert s["mode_spread"] == pytest.approx(math.sqrt(0.5 / 1.899), abs=0.03)
    assert T.mixture_scores(np.full((3, 2), 9.0), centres.numpy(), 0.05)["mode_spread"] is None


def test_mixture_scores_on_planted_samples():
    source = ring8()
    centres = source.centres.numpy()
    # 30 samples exactly on mode 0, 10 on mode 1, 10 far away (low quality), nothing elsewhere.
    x = np.concatenate([np.repeat(centres[:1], 30, 0), np.repeat(centres[1:2], 10, 0) + 0.02, np.full((10, 2), 5.0)])
    s = T.mixture_scores(x, centres, source.std)
    assert s["modes"] == 2
    assert s["high_quality"] == pytest.approx(40 / 50)
    q = np.array([0.75, 0.25])
    assert s["reverse_kl"] == pytest.approx(float((q * np.log(8 * q)).sum()))
    # just outside 3 std is not high quality
    assert T.mixture_scores(centres[:1] + [0.0301, 0], centres, 0.01)["high_quality"] == 0.0
    assert T.mixture_scores(np.full((3, 2), 9.0), centres, 0.01)["reverse_kl"] is None


def test_curve_scores():
    x = np.linspace(-50, 50, 1001)
    pts = np.stack([x, 10 + x**2 + 25.0], 1)  # every point 25 above the curve
    s = T.curve_scores(pts, np.full(len(x), 25.0), -50, 50, 2500)
    assert s["curve_error"] == pytest.approx(0.01)
    assert s["ks_x"] == pytest.approx(stats.kstest(x, stats.uniform(-50, 100).cdf).statistic)


def test_mmd_matches_a_direct_computation(feats):
    real, fake = feats[0][:80, :3], feats[1][:70, :3]
    h = 1.7
    k = lambda a, b: np.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (2 * h * h))
    kxx, kyy = k(real, real), k(fake, fake)
    m, n = len(real), len(fake)
    expect = ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
              - 2 * k(real, fake).mean())
    assert T.mmd2_unbiased(real, fake, bandwidth=h)["mmd2"] == pytest.approx(expect, rel=1e-9)
    same = T.mmd2_unbiased(real, feats[0][80:160, :3])["mmd2"]
    assert abs(same) < T.mmd2_unbiased(real, fake)["mmd2"]


def test_wasserstein_known_answers():
    x = np.random.default_rng(0).normal(size=(200, 2))
    assert T.wasserstein(x, x + [3.0, 4.0]) == pytest.approx(5.0, rel=1e-9)  # a pure shift
    a, b = np.random.default_rng(1).normal(size=(300, 1)), np.random.default_rng(2).normal(size=(300, 1)) + 1
    assert T.wasserstein(a, b) == pytest.approx(stats.wasserstein_distance(a[:, 0], b[:, 0]), rel=1e-9)
    assert T.sliced_wasserstein(x, x + [3.0, 4.0]) > T.sliced_wasserstein(x, x + [0.1, 0.0])


# --------------------------------------------------------------------------- probability view

def test_kde_matches_a_mixture_of_scipy_normals():
    pts = np.random.default_rng(0).normal(size=(300, 2))
    query = np.random.default_rng(1).normal(size=(50, 2))
    h = 0.4
    ours = P.kde_log_density(torch.as_tensor(query), torch.as_tensor(pts), h).numpy()
    ref = np.log(np.mean([stats.multivariate_normal(p, h * h).pdf(query) for p in pts], axis=0))
    assert np.allclose(ours, ref, rtol=1e-9)


def test_bandwidth_adapts_to_narrow_modes():
    source = ring8()
    x = source.sample(4000, torch.Generator().manual_seed(0)).double()
    h = P.select_bandwidth(x[:2000], x[2000:])
    assert 0.002 < h < 0.03  # the modes' own std is 0.01; Scott's rule would give ~0.2


def test_jsd_is_zero_for_equal_and_log2_for_disjoint_densities():
    lp = torch.zeros(100, dtype=torch.float64)
    assert P.jsd(lp, lp, lp, lp) == pytest.approx(0.0, abs=1e-12)
    far = torch.full((100,), -1e4, dtype=torch.float64)
    assert P.jsd(lp, far, far, lp) == pytest.approx(math.log(2), rel=1e-9)


def test_probability_view_on_a_perfect_generator():
    """G = the data: JSD near 0, V(D*, G) near -log 4, and D = 1/2 is D*'s value."""
    source = ring8()
    gen = source.sample(4000, torch.Generator().manual_seed(0)).numpy()
    real = source.sample(2000, torch.Generator().manual_seed(1)).numpy()
    density = P.GeneratedDensity(gen)
    out = P.probability_view(source.log_prob, real, density, lambda x: np.full(len(x), 0.5))
    assert abs(out["jsd"]) < 0.05
    blurred = P.probability_view(lambda x: source.log_prob(x, blur=density.bandwidth), real, density, None)
    assert abs(blurred["jsd"]) < 0.01  # the same smoothing on both sides removes the plug-in bias
    assert out["d_star_error"] < 0.12
    # a generator that only makes two of the eight modes: JSD is that of the known densities,
    # p_g = 4 p_data on those modes and 0 elsewhere: 1/2 (1/4 log(2*1/5) + 3/4 log 2) + 1/2 log(2*4/5)
    noise = 0.01 * np.random.default_rng(2).normal(size=(4000, 2))
    collapsed = source.centres.numpy()[[0, 1]].repeat(2000, 0) + noise
    bad = P.probability_view(source.log_prob, real, P.GeneratedDensity(collapsed), None)
    expect = 0.5 * (0.25 * math.log(0.4) + 0.75 * math.log(2)) + 0.5 * math.log(1.6)
    assert bad["jsd"] == pytest.approx(expect, abs=0.03)


def test_probability_grid_shapes():
    source = ring8()
    gen = source.sample(1000, torch.Generator().manual_seed(0)).numpy()
    g = P.probability_grid(source.log_prob, P.GeneratedDensity(gen), lambda x: np.full(len(x), 0.3),
                           np.array([-1.5, -1.5]), np.array([1.5, 1.5]), size=20)
    assert g["d_star"].shape == g["d_model"].shape == (20, 20)
    assert np.all((g["d_star"] >= 0) & (g["d_star"] <= 1))


# --------------------------------------------------------------------------- image feature metrics

def test_frechet_distance_matches_the_published_formula(feats):
    real, fake = feats
    mu1, mu2 = real.mean(0), fake.mean(0)
    s1, s2 = np.cov(real, rowvar=False), np.cov(fake, rowvar=False)
    expect = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert F.frechet_distance(real, fake) == pytest.approx(expect, rel=1e-6)
    from torchmetrics.image.fid import _compute_fid

    tm = _compute_fid(torch.tensor(mu1), torch.tensor(s1), torch.tensor(mu2), torch.tensor(s2))
    assert F.frechet_distance(real, fake) == pytest.approx(float(tm), rel=1e-6)


def test_kid_matches_torchmetrics_on_each_subset(feats):
    from torchmetrics.image.kid import poly_mmd

    real, fake = feats
    a, b = torch.tensor(real), torch.tensor(fake)
    # (torchmetrics' formula assumes sets of equal size, as KID's subsets are)
    assert F.polynomial_mmd2(a[:500], b) == pytest.approx(float(poly_mmd(a[:500], b)), rel=1e-6)
    out = F.kernel_distance(real, fake, subsets=5, subset_size=200, seed=3)
    rng = np.random.default_rng(3)
    ref = [float(poly_mmd(a[rng.choice(600, 200, replace=False)], b[rng.choice(500, 200, replace=False)]))
           for _ in range(5)]
    assert out["kid"] == pytest.approx(np.mean(ref), rel=1e-6)
    assert out["kid_std"] == pytest.approx(np.std(ref), rel=1e-6)


def test_precision_recall_density_coverage_match_prdc(feats):
    from prdc import compute_prdc

    real, fake = feats
    ref3 = compute_prdc(real, fake, nearest_k=3)
    ref5 = compute_prdc(real, fake, nearest_k=5)
    pr, dc = F.precision_recall(real, fake, k=3), F.density_coverage(real, fake, k=5)
    for key in ("precision", "recall"):
        assert pr[key] == pytest.approx(ref3[key], rel=1e-6)
    for key in ("density", "coverage"):
        assert dc[key] == pytest.approx(ref5[key], rel=1e-6)
    assert 0 < pr["precision"] < 1 and 0 < dc["coverage"] < 1


def test_classifier_scores_known_answers():
    eye = np.eye(10)
    uniform_confident = np.repeat(eye, 100, 0)  # every class, fully confident: score 10
    s = F.classifier_scores(uniform_confident, uniform_confident, splits=1)
    assert s["classifier_score"] == pytest.approx(10.0)
    assert s["confident"] == 1.0 and s["classes_covered"] == 10
    assert s["class_kl"] == pytest.approx(0.0, abs=1e-3)
    collapsed = np.repeat(eye[:1], 1000, 0)  # one class only
    c = F.classifier_scores(collapsed, uniform_confident, splits=1)
    assert c["classifier_score"] == pytest.approx(1.0)
    assert c["classes_covered"] == 1
    assert c["class_kl"] == pytest.approx(math.log(1 / ((100 + 1) / 1010)), rel=1e-9)
    unsure = np.full((1000, 10), 0.1)
    assert F.classifier_scores(unsure, uniform_confident)["confident"] == 0.0


def test_blurred_mixture_density_is_the_mixture_with_wider_components():
    from gankit.data.toy import GaussianMixture2D

    source = ring8()
    x = torch.randn(50, 2, dtype=torch.float64)
    wide = GaussianMixture2D(source.centres, math.sqrt(source.std**2 + 0.03**2))
    assert torch.allclose(source.log_prob(x, blur=0.03), wide.log_prob(x), rtol=1e-6)


# --------------------------------------------------------------------------- V(D*, G), V(D, G), JSD exactly
# Two distributions on the points 0, 1, 2, 3 (1-D). The "samples" are the support points repeated
# in proportion to their probability (8 of each), so every Monte-Carlo mean in probability_view is
# an exact expectation and the answers can be compared at 1e-12.
P_DATA = np.array([4, 2, 1, 1]) / 8
P_G = np.array([1, 1, 1, 5]) / 8  # not P_DATA mirrored: KL(p||m) != KL(q||m)
REAL = np.repeat(np.arange(4.0), (8 * P_DATA).astype(int))[:, None]


class ExactDensity:
    """Stands in for GeneratedDensity: the exact log p_g, and held-out samples in p_g's proportions."""

    bandwidth = 0.0
    held_out = torch.as_tensor(np.repeat(np.arange(4.0), (8 * P_G).astype(int))[:, None], dtype=torch.float64)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.log(P_G), dtype=torch.float64)[x[:, 0].long()]


def log_p_data(x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.log(P_DATA), dtype=torch.float64)[x[:, 0].long()]


def table(values):
    """A discriminator given by its value D(x) at each support point."""
    values = np.asarray(values, dtype=np.float64)
    return lambda x: values[np.asarray(x)[:, 0].astype(int)]


def test_value_of_d_star_is_minus_log4_plus_twice_an_independent_jsd():
    js = jensenshannon(P_DATA, P_G) ** 2  # scipy: natural log; it returns the square root of the JSD
    assert 0.1 < js < math.log(2) - 0.1  # neither equal nor disjoint: a factor or a term dropped shows
    optimal = P_DATA / (P_DATA + P_G)
    out = P.probability_view(log_p_data, REAL, ExactDensity(), table(optimal))
    assert out["jsd"] == pytest.approx(js, rel=1e-12)
    assert out["value_d_star"] == pytest.approx(-math.log(4) + 2 * js, rel=1e-12)
    # V(D, G) of D = D* is computed from log D(x) and log(1 - D(G(z))), not from the JSD: the theorem
    # ties the two code paths together.
    assert out["value_d"] == pytest.approx(out["value_d_star"], rel=1e-12)
    assert out["d_star_error"] == pytest.approx(0.0, abs=1e-12)


def test_value_of_a_non_constant_d_against_a_hand_sum():
    d = np.array([0.9, 0.6, 0.3, 0.2])
    out = P.probability_view(log_p_data, REAL, ExactDensity(), table(d))
    # E_data log D(x) + E_g log(1 - D(x)), written out term by term
    expect = (0.5 * math.log(0.9) + 0.25 * math.log(0.6) + 0.125 * math.log(0.3) + 0.125 * math.log(0.2)
              + 0.125 * math.log(0.1) + 0.125 * math.log(0.4) + 0.125 * math.log(0.7) + 0.625 * math.log(0.8))
    assert out["value_d"] == pytest.approx(expect, rel=1e-12)
    assert out["value_d"] < out["value_d_star"]  # D* maximises V(., G)
    star = P_DATA / (P_DATA + P_G)  # (0.8, 2/3, 1/2, 1/6)
    assert out["d_star_error"] == pytest.approx(0.5 * (P_DATA + P_G) @ np.abs(d - star), rel=1e-12)
