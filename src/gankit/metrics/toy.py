"""Metrics for vector data: mode coverage on Gaussian mixtures, curve fit, two-sample distances.

The mixture metrics follow the definitions used by VEEGAN and PacGAN (2,500 samples): a sample is
*high quality* when it lies within 3 standard deviations of its nearest mode centre; a mode is
*covered* when at least one high-quality sample is nearest to it; the *reverse KL* compares the
histogram of high-quality samples over the modes with the uniform histogram of the data.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import stats


def mixture_scores(samples: np.ndarray, centres: np.ndarray, std: float) -> dict[str, float | None]:
    """modes (covered), high_quality (fraction in [0, 1]) and reverse_kl (nats; None when no sample
    is high quality, as the histogram is then undefined)."""
    x = np.asarray(samples, dtype=np.float64)
    c = np.asarray(centres, dtype=np.float64)
    dist = np.sqrt(((x[:, None, :] - c[None, :, :]) ** 2).sum(-1))
    nearest = dist.argmin(1)
    good = dist[np.arange(len(x)), nearest] <= 3 * std
    counts = np.bincount(nearest[good], minlength=len(c))
    return {
        "modes": int((counts > 0).sum()),
        "high_quality": float(good.mean()),
        "reverse_kl": reverse_kl_to_uniform(counts),
        "mode_spread": mode_spread(dist[np.arange(len(x)), nearest][good], std, x.shape[1]),
    }


def mode_spread(distances: np.ndarray, std: float, dim: int = 2, radius_in_std: float = 3.0) -> float | None:
    """The root-mean-square distance of the high-quality samples to their mode centre, over that of
    the data's own samples within the same radius: 1 for the data, below 1 when G's modes are tighter
    than the data's. High quality counts samples near a centre, so a G that shrinks each mode to a
    point scores 100% there: this says whether it did. None when no sample is high quality."""
    if len(distances) == 0:
        return None
    r2 = radius_in_std**2  # E[chi^2_k | chi^2_k <= r^2] = k P(chi^2_{k+2} <= r^2) / P(chi^2_k <= r^2)
    data_mean_sq = dim * stats.chi2.cdf(r2, dim + 2) / stats.chi2.cdf(r2, dim)
    return float(np.sqrt((distances**2).mean() / (data_mean_sq * std**2)))


def reverse_kl_to_uniform(counts: np.ndarray) -> float | None:
    """KL(q || uniform) of a histogram q over K bins: sum q log(K q), with 0 log 0 = 0."""
    total = counts.sum()
    if total == 0:
        return None
    q = counts[counts > 0] / total
    return float((q * np.log(len(counts) * q)).sum())


def curve_scores(samples: np.ndarray, curve_error: np.ndarray, x_low: float, x_high: float,
                 y_range: float) -> dict[str, float]:
    """For data on a curve: median vertical distance to it (as a fraction of the y range) and the
    Kolmogorov-Smirnov distance of the x coordinate to U(x_low, x_high)."""
    ks = stats.kstest(np.asarray(samples)[:, 0], stats.uniform(x_low, x_high - x_low).cdf).statistic
    return {"curve_error": float(np.median(curve_error) / y_range), "ks_x": float(ks)}


def median_bandwidth(a: torch.Tensor, b: torch.Tensor) -> float:
    """The median pairwise distance of the pooled points (of 2,000 of them drawn at random with a
    fixed seed, from both samples alike, when there are more); 1 when all points coincide."""
    pooled = torch.cat([a, b])
    pooled = pooled[torch.randperm(len(pooled), generator=torch.Generator().manual_seed(0))[:2000]]
    d = torch.cdist(pooled, pooled)
    return float(d[torch.triu(torch.ones_like(d, dtype=torch.bool), 1)].median()) or 1.0


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, bandwidth: float | None = None) -> dict[str, float]:
    """Unbiased squared MMD with a Gaussian kernel exp(-|a-b|^2 / (2 h^2)) (Gretton et al. 2012,
    eq. 3). h defaults to the median pairwise distance of the pooled samples (median heuristic; of
    2,000 of them drawn at random with a fixed seed, from both samples alike, when there are more).
    Can be slightly negative when the two samples come from one distribution."""
    a = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    if bandwidth is None:
        bandwidth = median_bandwidth(a, b)

    def kernel(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return torch.exp(-torch.cdist(p, q) ** 2 / (2 * bandwidth**2))

    m, n = len(a), len(b)
    kxx, kyy, kxy = kernel(a, a), kernel(b, b), kernel(a, b)
    term_x = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    term_y = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return {"mmd2": float(term_x + term_y - 2 * kxy.mean()), "mmd_bandwidth": bandwidth}


def mmd_permutation_test(x: np.ndarray, y: np.ndarray, permutations: int = 500, seed: int = 0,
                         bandwidth: float | None = None) -> dict[str, float]:
    """Kernel two-sample test (Gretton et al. 2012): the unbiased MMD^2 of x and y (Gaussian kernel,
    median-heuristic bandwidth unless given) and its permutation p-value, the share of random
    relabellings of the pooled points whose MMD^2 is at least the observed one (the observed split
    counted among them, so p >= 1 / (permutations + 1)). p > 0.05: the test cannot tell the samples apart.

    The kernel matrix of the pooled points is computed once; all relabellings are scored by one
    matrix product with their indicator vectors (scipy.stats.permutation_test would recompute the
    kernel for every relabelling, thousands of times slower here)."""
    a = torch.as_tensor(np.asarray(x), dtype=torch.float64)
    b = torch.as_tensor(np.asarray(y), dtype=torch.float64)
    pooled, m, n = torch.cat([a, b]), len(a), len(b)
    h = bandwidth if bandwidth is not None else median_bandwidth(a, b)
    k = torch.exp(-torch.cdist(pooled, pooled) ** 2 / (2 * h**2))
    k.fill_diagonal_(0.0)  # the unbiased estimate leaves out each point's kernel with itself
    rng = torch.Generator().manual_seed(seed)
    labels = torch.zeros(permutations + 1, m + n, dtype=torch.float64)
    labels[0, :m] = 1.0  # the observed split first
    for i in range(1, permutations + 1):
        labels[i, torch.randperm(m + n, generator=rng)[:m]] = 1.0
    in_x, in_y = labels.T, 1.0 - labels.T
    k_in_x = k @ in_x
    xx = (in_x * k_in_x).sum(0) / (m * (m - 1))
    xy = (in_y * k_in_x).sum(0) / (m * n)
    yy = (in_y * (k @ in_y)).sum(0) / (n * (n - 1))
    stats_ = xx + yy - 2 * xy
    p = float((stats_ >= stats_[0] - 1e-12).double().mean())
    return {"mmd2": float(stats_[0]), "p_value": p, "mmd_bandwidth": h}


def wasserstein(x: np.ndarray, y: np.ndarray) -> float:
    """Exact 1-Wasserstein distance between the two empirical distributions (Euclidean cost),
    by POT's network-simplex solver. Cost grows as n^3: keep n in the low thousands."""
    import ot

    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    cost = ot.dist(a, b, metric="euclidean")
    return float(ot.emd2(ot.unif(len(a)), ot.unif(len(b)), cost, numItermax=10_000_000))


def sliced_wasserstein(x: np.ndarray, y: np.ndarray, projections: int = 256, seed: int = 0) -> float:
    """Sliced 1-D Wasserstein-2 distance (POT), averaged over random directions: fast in any dimension."""
    import ot

    return float(ot.sliced_wasserstein_distance(np.asarray(x, np.float64), np.asarray(y, np.float64),
                                                n_projections=projections, seed=seed))


def perfect_high_quality(dim: int = 2, radius_in_std: float = 3.0) -> float:
    """The high-quality share of samples from the data itself: P(chi^2_dim <= r^2) (98.9% in 2-D)."""
    return float(stats.chi2.cdf(radius_in_std**2, dim))
