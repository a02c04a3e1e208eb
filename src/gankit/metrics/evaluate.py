"""Score a generator with the metrics that fit its data: `gankit eval` and periodic evaluation.

An `EvalTarget` is what every metric may need: the data source, a way to draw n samples (data
units for vectors, uint8 (N, H, W, C) for images) and, where it exists, sigmoid D on data points.
The trainer and `gankit eval` build one each; the metrics never see a network or a run directory.
"""
from __future__ import annotations

import hashlib
import sys
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from gankit.data import GaussianMixture2D, Source
from gankit.data.toy import Quadratic, TwoCurves
from gankit.errors import UserError
from gankit.io import atomic_write, cache_dir
from gankit.metrics import features as feat
from gankit.metrics import probability as prob
from gankit.metrics import toy
from gankit.registry import Registry


@dataclass
class EvalTarget:
    source: Source
    sample: Callable[[int, int], np.ndarray]  # (n, seed) -> samples
    d_prob: Callable[[np.ndarray], np.ndarray] | None = None  # data-unit points -> sigmoid D
    # samples of the generator D was trained against, where the sampler is another one (EMA, critic)
    live_sample: Callable[[int, int], np.ndarray] | None = None

    @property
    def is_image(self) -> bool:
        return self.source.kind == "image"

    def game_sample(self, n: int, seed: int) -> np.ndarray:
        """Samples of the G in the game with D: the live generator, which the sampler may refine."""
        return (self.live_sample or self.sample)(n, seed)


@dataclass
class Metric:
    applies: Callable[[EvalTarget], bool]
    compute: Callable[["Batch"], dict]
    kind: str  # "vector" or "image"


@dataclass
class Batch:
    """Generated and real samples for one evaluation, with lazily computed shared pieces."""

    target: EvalTarget
    fake: np.ndarray
    real: np.ndarray
    seed: int
    _cache: dict | None = None

    def shared(self, key: str, make: Callable[[], object]) -> object:
        if self._cache is None:
            self._cache = {}
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]


METRICS: Registry = Registry("metric")


def _register(name: str, help: str, kind: str, applies: Callable[[EvalTarget], bool]):
    def add(compute: Callable[[Batch], dict]) -> Callable[[Batch], dict]:
        METRICS.register(name, help)(Metric(applies, compute, kind))
        return compute

    return add


def _vector(t: EvalTarget) -> bool:
    return not t.is_image


def _mnist_like(t: EvalTarget) -> bool:
    return t.is_image and tuple(t.source.shape) == (1, 28, 28)


# --------------------------------------------------------------------------- vector metrics

@_register("modes", "Gaussian mixtures: modes covered, % high-quality samples (<= 3 std), reverse KL",
           "vector", lambda t: isinstance(t.source, GaussianMixture2D))
def _modes(b: Batch) -> dict:
    s = b.target.source
    return toy.mixture_scores(b.fake, s.centres.numpy(), s.std)


@_register("curve", "quadratic, two-curves: median distance to the curve / y range, KS distance of x",
           "vector", lambda t: isinstance(t.source, (Quadratic, TwoCurves)))
def _curve(b: Batch) -> dict:
    s = b.target.source
    err = s.curve_error(torch.as_tensor(b.fake, dtype=torch.float64)).numpy()
    return toy.curve_scores(b.fake, err, -s.half_width, s.half_width, s.half_width**2)


@_register("mmd", "unbiased squared MMD, Gaussian kernel with the median-distance bandwidth", "vector", _vector)
def _mmd(b: Batch) -> dict:
    return toy.mmd2_unbiased(b.fake, b.real)


@_register("wasserstein", "exact 1-Wasserstein distance between samples (POT; n up to a few thousand)",
           "vector", _vector)
def _wasserstein(b: Batch) -> dict:
    return {"wasserstein": toy.wasserstein(b.fake, b.real)}


@_register("sliced_wasserstein", "sliced Wasserstein distance (POT; fast in any dimension)", "vector", _vector)
def _sliced(b: Batch) -> dict:
    return {"sliced_wasserstein": toy.sliced_wasserstein(b.fake, b.real, seed=b.seed)}


def _known_density_2d(t: EvalTarget) -> bool:
    return not t.is_image and t.source.log_prob_known and t.source.dim == 2


@_register("probability", "known densities: JSD(p_data||p_g), V(D,G) vs V(D*,G) = -log 4 + 2 JSD, |D - D*|",
           "vector", _known_density_2d)
def _probability(b: Batch) -> dict:
    # D* and V(D, G) are about the G that D was trained against, so the live G's samples, not the sampler's
    fake = b.fake if b.target.live_sample is None else b.target.game_sample(len(b.fake), b.seed)
    density = prob.GeneratedDensity(fake)
    return prob.probability_view(blurred_log_prob(b.target.source, density), b.real, density, b.target.d_prob)


def blurred_log_prob(source, density: "prob.GeneratedDensity") -> Callable[[torch.Tensor], torch.Tensor]:
    """p_data blurred by the KDE's own kernel when the source can say so exactly (Gaussian mixtures):
    both densities then carry the same smoothing, and the JSD estimate loses the bias of comparing a
    sharp p_data with a smoothed p_g (which can even make it negative)."""
    if isinstance(source, GaussianMixture2D):
        return lambda x: source.log_prob(x, blur=density.bandwidth)
    return source.log_prob


# --------------------------------------------------------------------------- image metrics

def _classifier_outputs(b: Batch) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from gankit.metrics.classifier import WEIGHTS_SHA256, features_and_probs

    def make():
        real_f, real_p = cached_features(b.real, f"mnist-classifier-{WEIGHTS_SHA256[:12]}", features_and_probs)
        fake_f, fake_p = features_and_probs(b.fake)
        return real_f, real_p, fake_f, fake_p

    return b.shared("classifier", make)


@_register("fid", "Frechet distance on the bundled MNIST classifier's 128 features", "image", _mnist_like)
def _fid(b: Batch) -> dict:
    real_f, _, fake_f, _ = _classifier_outputs(b)
    return {"fid": feat.frechet_distance(real_f, fake_f)}


@_register("kid", "KID on the MNIST classifier's features: cubic kernel, unbiased, 100 subsets of 1,000",
           "image", _mnist_like)
def _kid(b: Batch) -> dict:
    real_f, _, fake_f, _ = _classifier_outputs(b)
    return feat.kernel_distance(real_f, fake_f, seed=b.seed)


@_register("prdc", "precision/recall (k=3) and density/coverage (k=5) on the MNIST classifier's features",
           "image", _mnist_like)
def _prdc(b: Batch) -> dict:
    real_f, _, fake_f, _ = _classifier_outputs(b)
    return {**feat.precision_recall(real_f, fake_f, k=3), **feat.density_coverage(real_f, fake_f, k=5)}


@_register("classifier", "MNIST classifier: classifier score, % confident, classes covered, class-histogram KL",
           "image", _mnist_like)
def _classifier(b: Batch) -> dict:
    _, real_p, _, fake_p = _classifier_outputs(b)
    return feat.classifier_scores(fake_p, real_p)


def _inception_outputs(b: Batch) -> tuple[np.ndarray, np.ndarray]:
    from gankit.metrics.inception import inception_features

    return b.shared("inception", lambda: (cached_features(b.real, "inception-v3", inception_features)[0],
                                          inception_features(b.fake)[0]))


@_register("fid_inception", "FID on InceptionV3 pool features (needs torch-fidelity and its weights file)",
           "image", lambda t: t.is_image)
def _fid_inception(b: Batch) -> dict:
    real_f, fake_f = _inception_outputs(b)
    return {"fid_inception": feat.frechet_distance(real_f, fake_f)}


@_register("kid_inception", "KID on InceptionV3 pool features (needs torch-fidelity and its weights file)",
           "image", lambda t: t.is_image)
def _kid_inception(b: Batch) -> dict:
    real_f, fake_f = _inception_outputs(b)
    out = feat.kernel_distance(real_f, fake_f, seed=b.seed)
    return {"kid_inception": out["kid"], "kid_inception_std": out["kid_std"]}


# --------------------------------------------------------------------------- running them

DEFAULTS = ("modes", "curve", "probability", "mmd", "wasserstein", "fid", "kid", "prdc", "classifier")


def default_metrics(target: EvalTarget) -> list[str]:
    names = [n for n in DEFAULTS if METRICS.get(n).applies(target)]
    if not target.is_image and target.source.dim > 2:
        names = [n if n != "wasserstein" else "sliced_wasserstein" for n in names]
    if not names:
        shape = "x".join(str(s) for s in target.source.shape)
        raise UserError(f"no default metrics for {shape} images (the bundled classifier takes 28x28 grey digits); "
                        "ask for --metrics fid_inception,kid_inception")
    return names


def check_metrics(names: list[str], target: EvalTarget) -> None:
    for name in names:
        metric = METRICS.get(name)  # unknown names: one clear error listing the valid ones
        if not metric.applies(target):
            raise UserError(f"metric '{name}' does not apply to this run's data; "
                            f"these do: {', '.join(n for n in METRICS.names() if METRICS.get(n).applies(target))}")


def check_sample_count(n: int | None) -> None:
    """Refuse fewer than 10 generated samples (None: the default count)."""
    if n is not None and n < 10:
        raise UserError(f"-n {n} is too few samples to score; give at least 10")


def default_n(target: EvalTarget) -> int:
    """2,500 samples for vectors (the published mixture protocol), 10,000 for images (FID's usual)."""
    return 10_000 if target.is_image else 2_500


def real_samples(target: EvalTarget, n: int, seed: int) -> np.ndarray:
    """Vectors: n fresh draws. Images: up to n of the dataset's own images (all if it holds fewer),
    as uint8 (N, H, W, C)."""
    rng = torch.Generator().manual_seed(10_000 + seed)
    if not target.is_image:
        return target.source.sample(n, rng).numpy()
    images = target.source.images
    if len(images) > n:
        images = images[torch.randperm(len(images), generator=rng)[:n]]
    return images.numpy().transpose(0, 2, 3, 1)


def evaluate(target: EvalTarget, names: list[str] | None = None, n: int | None = None, seed: int = 0,
             progress: bool = False) -> dict[str, float | int | None]:
    """Compute the named metrics (default: those that fit the data) on n generated samples."""
    names = list(names) if names else default_metrics(target)
    check_metrics(names, target)
    check_sample_count(n)
    n = n or default_n(target)
    batch = Batch(target, target.sample(n, seed), real_samples(target, n, seed), seed)
    out: dict[str, float | int | None] = {"n": n}
    for name in names:
        started = time.perf_counter()
        out.update(METRICS.get(name).compute(batch))
        if progress:
            print(f"gankit: {name} done in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return out


# --------------------------------------------------------------------------- cached real features

def cached_features(images: np.ndarray, extractor: str, compute: Callable[[np.ndarray], tuple[np.ndarray, ...]]
                    ) -> tuple[np.ndarray, ...]:
    """Features of real images, cached on disk by a hash of the images themselves and the extractor's
    name, so a changed dataset can never reuse stale statistics."""
    digest = hashlib.sha256(extractor.encode() + np.ascontiguousarray(images).tobytes()).hexdigest()[:24]
    path = cache_dir() / "features" / f"{extractor}-{digest}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return tuple(data[f"a{i}"] for i in range(len(data.files)))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a damaged (e.g. truncated) cache file is recomputed and replaced
    arrays = compute(images)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # a unique temporary file renamed into place: evaluations running at once never mix their bytes
        atomic_write(path, lambda fh: np.savez(fh, **{f"a{i}": a for i, a in enumerate(arrays)}))
    except OSError:
        pass  # a read-only home: work without the cache
    return arrays
