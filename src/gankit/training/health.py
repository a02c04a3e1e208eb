"""Health checks on the logged values: divergence, a discriminator that has won, collapse.

They read only what the trainer logs anyway (no extra synchronisation in the training step) and
return plain-language messages; the trainer decides what to do with them.
"""
from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch


def nonfinite(row: dict) -> list[str]:
    """Names of logged values that are NaN or infinite."""
    return [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]


PARTS = {"g": "weights of G", "d": "weights of D", "ema": "weights of EMA G", "opt_g": "optimiser state of G",
         "opt_d": "optimiser state of D"}


def nonfinite_parts(state: dict) -> list[str]:
    """The parts of a training state (networks, EMA, optimisers; a checkpoint's or the trainer's)
    that hold a NaN or an infinity. Weights can go bad while the logged losses are still finite (a
    non-finite gradient in the last update); Adam's moments can overflow while the weights look fine."""
    return [name for key, name in PARTS.items() if state.get(key) is not None and nonfinite_tensors(state[key])]


def nonfinite_tensors(state: Any) -> bool:
    """Whether a nested structure holds a floating tensor with a NaN or an infinity (one host sync
    per device, not one per tensor)."""
    flags: dict[torch.device, list[torch.Tensor]] = {}
    for t in _tensors(state):
        if t.is_floating_point():
            flags.setdefault(t.device, []).append(torch.isfinite(t).all())
    return any(not bool(torch.stack(f).all()) for f in flags.values())


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _tensors(value)


def batch_diversity(fake: torch.Tensor, real: torch.Tensor, groups: torch.Tensor | None = None) -> dict:
    """The spread of a generated batch (mean per-coordinate standard deviation) over a real batch's.
    With `groups` (each sample's category or class) also `diversity_within`: the same spread taken
    within each group of the generated batch, averaged over groups of two or more. G can make one
    image per category while the batch as a whole stays as spread as the data; only this shows it."""
    scale = real.detach().float().std(0).mean().clamp_min(1e-12)
    fake = fake.detach().float().flatten(1)
    stats = {"diversity": fake.std(0).mean() / scale}
    if groups is not None:
        k = int(groups.max()) + 1
        count = torch.bincount(groups, minlength=k).to(fake.dtype)[:, None]
        mean = fake.new_zeros(k, fake.shape[1]).index_add_(0, groups, fake) / count.clamp_min(1)
        deviation = fake - mean[groups]  # two passes: no cancellation when a group is all one image
        variance = fake.new_zeros(k, fake.shape[1]).index_add_(0, groups, deviation * deviation)
        spread = (variance / (count - 1).clamp_min(1)).sqrt().mean(1)[count[:, 0] >= 2]
        stats["diversity_within"] = spread.mean() / scale  # NaN with no group of two: callers ensure one
    return stats


@dataclass
class HealthMonitor:
    """Warns once per episode: D has won for `patience` log lines, or diversity (of the batch, or
    within its categories) fell sharply. A diversity's peak counts from its `settle`-th log line on
    (in the first few hundred steps G's noise-like output is spread, then briefly collapsed, which
    is no warning), and a warned fall is warned again only after diversity came back to half its
    peak (no warning each time it hovers around the threshold)."""

    patience: int = 20
    collapse_ratio: float = 0.3  # diversity below this share of its peak counts as collapse
    settle: int = 25
    _d_wins_for: int = 0
    _seen: dict = field(default_factory=dict)
    _peaks: dict = field(default_factory=dict)
    _warned: set = field(default_factory=set)

    def check(self, row: dict) -> list[tuple[str, str]]:
        warnings = []
        if row.get("d_real", 0.5) > 0.99 and row.get("d_fake", 0.5) < 0.01:
            self._d_wins_for += 1
        else:
            self._d_wins_for = 0
            self._warned.discard("d_wins")
        if self._d_wins_for >= self.patience and "d_wins" not in self._warned:
            self._warned.add("d_wins")
            warnings.append(("d_wins", f"D has won for {self._d_wins_for} log lines (D(x) > 0.99, D(G(z)) < 0.01): "
                                       "G gets no useful gradient; try a lower optim_d.lr, loss.r1_gamma, "
                                       "loss.instance_noise or model.spectral_norm=true"))
        for key, where in (("diversity", "sample diversity"), ("diversity_within", "diversity within categories")):
            warning = self._collapse(key, row.get(key), where)
            if warning:
                warnings.append(warning)
        return warnings

    def _collapse(self, key: str, diversity: float | None, where: str) -> tuple[str, str] | None:
        if diversity is None or not math.isfinite(diversity):
            return None
        self._seen[key] = self._seen.get(key, 0) + 1
        if self._seen[key] < self.settle:
            return None
        peak = self._peaks[key] = max(self._peaks.get(key, 0.0), diversity)
        if diversity > 0.5 * peak:
            self._warned.discard(key)
        elif peak > 0.2 and diversity < self.collapse_ratio * peak and key not in self._warned:
            self._warned.add(key)
            return ("collapse", f"{where} fell to {diversity:.3f} from a peak of {peak:.3f}: signs of mode "
                                "collapse; try model.pack=2, train.ema_decay or a lower optim_g.lr")
        return None


@dataclass
class CpuShare:
    """Warns once when this run's training steps get much less CPU time than their threads could use:
    the cores are shared with other programs or runs, and PyTorch's threads then wait on each other
    (training can be 10-100x slower). Only the training steps are timed (begin/end around each), so
    evaluation, checkpoint writes and the first stretch (warm-up) do not count; for one-process CPU
    training (the trainer decides)."""

    threads: int
    min_seconds: float = 2.0
    low_share: float = 0.6
    _started: tuple[float, float] | None = None
    _wall: float = 0.0
    _cpu: float = 0.0
    _stretches: int = 0
    _warned: bool = False

    def begin(self) -> None:
        self._started = (time.perf_counter(), time.process_time())

    def end(self) -> None:
        if self._started is not None:
            self._wall += time.perf_counter() - self._started[0]
            self._cpu += time.process_time() - self._started[1]
            self._started = None

    def check(self) -> str | None:
        if self._warned or self._wall < self.min_seconds:
            return None
        share = self._cpu / (self._wall * self.threads)
        self._wall = self._cpu = 0.0
        self._stretches += 1
        if self._stretches == 1 or share >= self.low_share:  # the first stretch holds the warm-up
            return None
        self._warned = True
        fix = ("run fewer programs at once" if self.threads == 1 else
               "give each run fewer threads (--set train.threads=1) or run one at a time")
        return (f"this run's {self.threads} thread(s) got {100 * share:.0f}% of the CPU time they could use: the "
                f"machine's {os.cpu_count()} cores are shared with other programs or runs, and PyTorch threads "
                f"then wait on each other; {fix}")
