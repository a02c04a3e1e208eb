"""Image metrics on features and class predictions of a fixed network, with the published definitions.

- Frechet distance (Heusel et al. 2017): |mu_r - mu_g|^2 + tr(S_r + S_g - 2 (S_r S_g)^(1/2)).
- KID (Binkowski et al. 2018): unbiased MMD^2 with the cubic kernel (x.y / d + 1)^3, averaged over
  random subsets.
- Precision / recall (Kynkaanniemi et al. 2019) and density / coverage (Naeem et al. 2020), from
  k-nearest-neighbour balls around real (and, for recall, generated) features.
- Classifier scores on predictions: the "inception score" exp E KL(p(y|x) || p(y)), the share of
  confident samples, classes covered and the KL of the class histogram to the real data's.
Everything is computed in float64.
"""
from __future__ import annotations

import numpy as np
import torch


def _f64(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x), dtype=torch.float64)


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """FID-style distance between Gaussians fitted to two feature sets. tr (S_r S_g)^(1/2) is the sum
    of the square roots of the eigenvalues of S_r S_g (real and >= 0 up to rounding, as S_r S_g is
    similar to a positive semi-definite matrix), which avoids an unstable matrix square root."""
    a, b = _f64(real), _f64(fake)
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    eig = torch.linalg.eigvals(cov_a @ cov_b).real.clamp_min(0)
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * eig.sqrt().sum())


def polynomial_mmd2(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 (one subset of KID)."""
    d = real.shape[1]
    kxx, kyy, kxy = ((real @ real.T) / d + 1) ** 3, ((fake @ fake.T) / d + 1) ** 3, ((real @ fake.T) / d + 1) ** 3
    m, n = len(real), len(fake)
    return float((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
                 - 2 * kxy.mean())


def kernel_distance(real: np.ndarray, fake: np.ndarray, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> dict[str, float]:
    """KID: mean and standard deviation of polynomial_mmd2 over `subsets` random subsets of each set."""
    a, b = _f64(real), _f64(fake)
    size = min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = [polynomial_mmd2(a[rng.choice(len(a), size, replace=False)], b[rng.choice(len(b), size, replace=False)])
              for _ in range(subsets)]
    return {"kid": float(np.mean(values)), "kid_std": float(np.std(values))}


def _pairwise_min_k(x: torch.Tensor, k: int, chunk: int = 1024) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row."""
    radii = []
    for part in x.split(chunk):
        d = torch.cdist(part, x)
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # index 0 is the point itself
    return torch.cat(radii)


def _count_inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int = 1024) -> torch.Tensor:
    """For each point, how many balls (centre, radius) contain it."""
    counts = []
    for part in points.split(chunk):
        counts.append((torch.cdist(part, centres) <= radii[None, :]).sum(1))
    return torch.cat(counts)


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> dict[str, float]:
    """Improved precision and recall: the share of generated samples inside some real k-NN ball,
    and of real samples inside some generated k-NN ball."""
    a, b = _f64(real), _f64(fake)
    precision = (_count_inside(b, a, _pairwise_min_k(a, k)) > 0).double().mean()
    recall = (_count_inside(a, b, _pairwise_min_k(b, k)) > 0).double().mean()
    return {"precision": float(precision), "recall": float(recall)}


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Density: mean number of real k-NN balls holding a generated sample, over k. Coverage: the
    share of real samples whose own k-NN ball holds at least one generated sample."""
    a, b = _f64(real), _f64(fake)
    radii = _pairwise_min_k(a, k)
    density = _count_inside(b, a, radii).double().mean() / k
    nearest_fake = torch.cat([torch.cdist(part, b).min(1).values for part in a.split(1024)])
    coverage = (nearest_fake <= radii).double().mean()
    return {"density": float(density), "coverage": float(coverage)}


CONFIDENT_AT = 0.9  # a sample is read with confidence when its top class has at least this probability


def classifier_scores(fake_probs: np.ndarray, real_probs: np.ndarray, splits: int = 10,
                      confident_at: float = CONFIDENT_AT, covered_share: float = 0.1) -> dict[str, float]:
    """Scores on a classifier's class probabilities for generated (and real) images.

    classifier_score: exp E_x KL(p(y|x) || p(y)), mean over `splits` parts (the "inception score").
    confident: share of samples whose top class has probability >= `confident_at`.
    classes_covered: classes whose share among confident samples is at least `covered_share` times
        their share among the real images (a collapsed G that rarely makes a class does not cover it).
    class_kl: KL(generated || real) of the histograms of top classes (nats; real counts +1 smoothed).
    """
    p = np.asarray(fake_probs, np.float64)
    eps = 1e-12
    scores = []
    for part in np.array_split(p, splits):
        marginal = part.mean(0, keepdims=True)
        kl = (part * (np.log(part + eps) - np.log(marginal + eps))).sum(1)
        scores.append(np.exp(kl.mean()))
    classes = p.shape[1]
    real_hist = np.bincount(np.asarray(real_probs).argmax(1), minlength=classes) + 1.0
    real_share = real_hist / real_hist.sum()
    top = p.argmax(1)
    confident = p.max(1) >= confident_at
    conf_hist = np.bincount(top[confident], minlength=classes)
    conf_share = conf_hist / max(conf_hist.sum(), 1)
    gen_share = np.bincount(top, minlength=classes) / len(top)
    nz = gen_share > 0
    return {
        "classifier_score": float(np.mean(scores)),
        "classifier_score_std": float(np.std(scores)),
        "confident": float(confident.mean()),
        "classes_covered": int((conf_share >= covered_share * real_share).sum()),
        "class_kl": float((gen_share[nz] * np.log(gen_share[nz] / real_share[nz])).sum()),
    }
