"""Vector data sources: the articles' toy distributions and a user's own points.

Each source draws `sample(n, generator)` as a float32 tensor (n, dim) in the data's own units.
Sources with a known density also give `log_prob(x)`; sources on a curve give `curve_error(x)`,
the vertical distance of points to the nearest curve (their density is singular in the plane).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import torch

from gankit.errors import UserError


class VectorSource:
    """Base class: an endless supply of vectors of dimension `dim`."""

    kind = "vector"
    dim: int = 2
    log_prob_known = False
    num_classes = 0

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.dim,)

    def sample_labeled(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
        return self.sample(n, generator), None

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError(f"{type(self).__name__} has no known density")

    def curve_error(self, x: torch.Tensor) -> torch.Tensor | None:
        return None

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-coordinate mean and std, for normalisation (a fixed large sample: deterministic)."""
        x = self.sample(100_000, torch.Generator().manual_seed(12345))
        return x.mean(0), x.std(0).clamp_min(1e-8)


def _uniform(n: int, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator)


class Quadratic(VectorSource):
    def __init__(self, half_width: float = 50.0, offset: float = 10.0):
        self.half_width, self.offset = half_width, offset

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        x = _uniform(n, -self.half_width, self.half_width, generator)
        return torch.stack([x, self.offset + x**2], dim=1)

    def curve_error(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, 1] - (self.offset + x[:, 0] ** 2)).abs()


class TwoCurves(VectorSource):
    def __init__(self, half_width: float = 50.0, offset: float = 10.0):
        self.half_width, self.offset = half_width, offset

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        x = _uniform(n, -self.half_width, self.half_width, generator)
        sign = torch.where(torch.rand(n, generator=generator) < 0.5, 1.0, -1.0)
        return torch.stack([x, sign * (self.offset + x**2)], dim=1)

    def curve_error(self, x: torch.Tensor) -> torch.Tensor:
        upper = (x[:, 1] - (self.offset + x[:, 0] ** 2)).abs()
        lower = (x[:, 1] + (self.offset + x[:, 0] ** 2)).abs()
        return torch.minimum(upper, lower)


class GaussianMixture2D(VectorSource):
    """Equal-weight isotropic Gaussians: the mode-collapse benchmarks."""

    log_prob_known = True

    def __init__(self, centres: torch.Tensor, std: float):
        self.centres, self.std = centres.float(), float(std)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        which = torch.randint(len(self.centres), (n,), generator=generator)
        return self.centres[which] + self.std * torch.randn(n, 2, generator=generator)

    def log_prob(self, x: torch.Tensor, blur: float = 0.0) -> torch.Tensor:
        """log density; with `blur` > 0, that of the data plus N(0, blur^2 I) noise (exact: each
        component's variance grows by blur^2), to compare with a kernel estimate of that bandwidth."""
        var = self.std**2 + blur**2
        sq = ((x[:, None, :] - self.centres[None].to(x)) ** 2).sum(-1)
        log_component = -sq / (2 * var) - math.log(2 * math.pi * var)
        return torch.logsumexp(log_component, dim=1) - math.log(len(self.centres))


def ring8() -> GaussianMixture2D:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return GaussianMixture2D(torch.stack([angles.cos(), angles.sin()], 1), std=0.01)


def grid25() -> GaussianMixture2D:
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    centres = torch.cartesian_prod(ticks, ticks)
    return GaussianMixture2D(centres, std=0.05)


class Points(VectorSource):
    """A user's own vectors, drawn uniformly at random (with replacement) from the array."""

    def __init__(self, array: np.ndarray, source: str = "array"):
        self.data = torch.as_tensor(validate_points(array, source), dtype=torch.float32)
        self.dim = self.data.shape[1]

    def __len__(self) -> int:
        return len(self.data)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.data.index_select(0, torch.randint(len(self.data), (n,), generator=generator))

    def moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.data.mean(0), self.data.std(0).clamp_min(1e-8)


def validate_points(array: object, source: str) -> np.ndarray:
    try:
        arr = np.asarray(array, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(f"{source}: points must be numbers in an array of shape (n, dim)")
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise UserError(f"{source}: points must have shape (n, dim), got shape {arr.shape}")
    if arr.shape[0] < 2 or arr.shape[1] < 1:
        raise UserError(f"{source}: needs at least 2 points of dimension >= 1, got shape {arr.shape}")
    bad = ~np.isfinite(arr)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise UserError(f"{source}: row {row} holds NaN or infinity; remove or fill such rows")
    return arr


def load_points(path: str) -> Points:
    """Points from .npy (an (n, dim) array) or .csv (numbers, an optional header line)."""
    file = Path(path)
    if not path:
        raise UserError("no points file given: `gankit train FILE.npy` (or FILE.csv), "
                        "or --set data.name=points:FILE")
    if not file.is_file():
        raise UserError(f"points file '{path}' does not exist; give data.name=points:PATH to a .npy or .csv file")
    suffix = file.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(file, allow_pickle=False)
        elif suffix == ".csv":
            array = _read_csv(file)
        else:
            raise UserError(f"points file '{path}' must end in .npy or .csv")
    except UserError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(f"points file '{path}' cannot be read ({str(exc).splitlines()[0]}); "
                        "it must hold an (n, dim) array of numbers")
    return Points(array, source=f"points file '{path}'")


def _read_csv(file: Path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no data": validate_points reports it in one line
        try:
            return np.loadtxt(file, delimiter=",", ndmin=2)
        except ValueError:
            pass
        try:
            return np.loadtxt(file, delimiter=",", ndmin=2, skiprows=1)  # a header line
        except ValueError:
            _refuse_other_separators(file)
            raise


def _refuse_other_separators(file: Path) -> None:
    """A CSV saved with semicolons or tabs (common in locales with a decimal comma) gets its own fix."""
    with open(file, encoding="utf-8", errors="replace") as fh:
        head = "".join(fh.readline() for _ in range(3))
    for sep, name in ((";", "semicolons"), ("\t", "tabs")):
        if sep in head:
            raise UserError(f"points file '{file}' separates values with {name}; save it with commas as the "
                            "separator and '.' as the decimal point (or as .npy)")
