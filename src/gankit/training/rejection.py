"""Discriminator rejection sampling (DRS, Azadi et al. 2019): keep each of G's samples with
probability min(1, r(x) / M), where r(x) = p_data(x) / p_g(x). Exact r would make the kept samples
follow p_data; off-manifold samples (G's "bridges" between modes, blurred digits) have r near 0 and
are dropped.

r comes from a *critic*: a discriminator fitted after training, with G frozen, by logistic
regression (real -> 1, G(z) -> 0). Its optimum is D* = p_data / (p_data + p_g) (the probability
view), so its logit estimates log r. Why not reuse the training D: it may be packed (PacGAN judges
groups of samples, not one), and it was always a step behind G. The critic has D's architecture
(unpacked) unless `train.drs_hidden` asks for other widths, and starts from fresh weights.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import warnings
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from gankit.config import RunConfig
from gankit.errors import UserError
from gankit.losses import ns_d
from gankit.models import MODELS
from gankit.models.base import eval_mode, without_batch_norm
from gankit.models.noise import sample_noise
from gankit.training.optim import make_optimizer

if TYPE_CHECKING:
    from gankit.training.trainer import Trainer

# Candidates drawn to set M (the largest log-ratio seen) once the critic is trained.
POOL = 20_000
CHUNK = 4_096
# A critic that keeps fewer than this share of G's samples is not used (sampling falls back to G
# alone, with a warning): each kept sample would cost over 100 draws, and so low a rate means M was
# set by a few spots where the critic overestimates the ratio rather than by G's real excess there.
MIN_ACCEPTANCE = 0.01


def build_critic(cfg: RunConfig, shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """D's architecture, unpacked, without dropout and without batch norm: the critic is fitted on
    separate batches but used one sample at a time, and its log-ratio must not depend on the batch."""
    hidden = cfg.train.drs_hidden or cfg.model.d_hidden
    model = dataclasses.replace(cfg.model, pack=1, d_hidden=tuple(hidden), d_dropout=0.0, d_batch_norm=False)
    return without_batch_norm(MODELS.get(cfg.model.name)(model, shape, num_classes)[1])


@dataclasses.dataclass
class Critic:
    """A fitted density-ratio critic and M = exp(log_max): the bound rejection sampling divides by."""

    net: nn.Module
    log_max: float
    acceptance: float  # fraction of G's samples kept, measured on the pool that set M

    @property
    def usable(self) -> bool:
        return self.acceptance >= MIN_ACCEPTANCE

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "log_max": self.log_max, "acceptance": self.acceptance}

    @classmethod
    def from_state(cls, state: dict, cfg: RunConfig, shape: tuple[int, ...], num_classes: int) -> "Critic":
        net = build_critic(cfg, shape, num_classes)
        try:
            net.load_state_dict(state["net"])
        except RuntimeError:  # fitted with batch norm by an earlier version: its function cannot be kept
            raise UserError("this run's rejection critic was fitted by an earlier gankit version with batch norm; "
                            "`gankit resume RUN` fits a new one (or sample G alone with --raw)") from None
        return cls(net.eval(), float(state["log_max"]), float(state["acceptance"]))

    @torch.no_grad()
    def log_ratio(self, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return self.net(x, labels).float()

    @torch.no_grad()
    def keep(self, x: torch.Tensor, labels: torch.Tensor | None, rng: torch.Generator) -> torch.Tensor:
        """Boolean mask: accept x with probability min(1, exp(log r(x) - log M))."""
        accept = torch.exp(torch.clamp(self.log_ratio(x, labels) - self.log_max, max=0.0))
        return torch.rand(len(x), generator=rng).to(x.device) < accept


DrawReal = Callable[[int, torch.Generator], tuple[torch.Tensor, "torch.Tensor | None"]]
DrawFake = Callable[[int, torch.Generator, "int | None"], tuple[torch.Tensor, "torch.Tensor | None"]]


def generator_draw(g: nn.Module, cfg: RunConfig, num_classes: int, device: torch.device) -> DrawFake:
    """draw(n, rng, label) -> G's samples in model space (eval mode) and their labels: all `label`,
    or uniform classes when label is None (None for an unconditional G)."""

    @torch.no_grad()
    def draw(n: int, rng: torch.Generator, label: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = sample_noise(n, cfg.model, rng).to(device)
        labels = None
        if num_classes:
            labels = torch.full((n,), label) if label is not None else torch.randint(num_classes, (n,), generator=rng)
            labels = labels.to(device)
        with eval_mode(g):
            return g(z, labels), labels

    return draw


def fit_critic(cfg: RunConfig, shape: tuple[int, ...], num_classes: int, draw_real: DrawReal,
               draw_fake: DrawFake, device: torch.device, progress: bool = True,
               should_stop: Callable[[], bool] = lambda: False) -> Critic | None:
    """Train the critic for train.drs_steps steps on fresh real and generated batches (model space),
    with D's optimiser settings, its learning rate decaying linearly to 0, then set M from POOL generated samples.
    None when should_stop() turns true first (Ctrl-C)."""
    t = cfg.train
    torch.manual_seed(t.seed + 4)
    net = build_critic(cfg, shape, num_classes).to(device)
    opt = make_optimizer(net.parameters(), cfg.optim_d)
    rng = torch.Generator().manual_seed(t.seed + 5)
    bar = tqdm(range(t.drs_steps), desc="drs critic", unit="step", file=sys.stderr, disable=not progress,
               dynamic_ncols=True, mininterval=0.5)
    for i in bar:
        if should_stop():
            bar.close()
            return None
        for group in opt.param_groups:
            group["lr"] = cfg.optim_d.lr * (1 - i / t.drs_steps)
        real, real_labels = draw_real(t.batch_size, rng)
        fake, fake_labels = draw_fake(t.batch_size, rng, None)
        # Separate forward passes: a critic with batch norm must not mix real and fake statistics.
        loss = ns_d(net(real, real_labels), net(fake, fake_labels))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i % 100 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    net.eval()
    with torch.no_grad():
        logits = torch.cat([net(*draw_fake(CHUNK, rng, None)).float() for _ in range(POOL // CHUNK + 1)])
    log_max = float(logits.max())
    acceptance = float(torch.exp(logits - log_max).mean())
    return Critic(net, log_max, acceptance)


def rejection_sample(critic: Critic, draw_fake: DrawFake, n: int, rng: torch.Generator,
                     labels: torch.Tensor | None = None) -> torch.Tensor:
    """n of G's samples kept by the critic (model space). With `labels` (a conditional G), sample i
    has class labels[i]: each class is sampled on its own, so rejection keeps the asked class mix."""
    if labels is None:
        return _kept(critic, draw_fake, n, rng, None)
    out: torch.Tensor | None = None
    for c in labels.unique().tolist():
        where = (labels == c).nonzero().squeeze(1)
        x = _kept(critic, draw_fake, len(where), rng, int(c))
        if out is None:
            out = x.new_empty((n, *x.shape[1:]))
        out[where.to(x.device)] = x
    assert out is not None
    return out


def _kept(critic: Critic, draw_fake: DrawFake, n: int, rng: torch.Generator, label: int | None) -> torch.Tensor:
    kept: list[torch.Tensor] = []
    have = tries = 0
    while have < n:
        size = min(max(int(1.2 * (n - have) / max(critic.acceptance, 1e-3)) + 64, 256), 65_536)
        x, x_labels = draw_fake(size, rng, label)
        mask = critic.keep(x, x_labels, rng)
        kept.append(x[mask])
        have += int(mask.sum())
        tries += size
        if have < n and tries > 3 * n / max(critic.acceptance, MIN_ACCEPTANCE) + 100_000:  # far below the measured rate
            warnings.warn(f"rejection sampling kept {have} of {tries} draws; the other {n - have} samples are "
                          "G's own, not filtered (refit the critic with more train.drs_steps)", stacklevel=2)
            kept.append(draw_fake(n - have, rng, label)[0])
            break
    return torch.cat(kept)[:n]


def fit_run_critic(run: "Trainer", progress: bool = True) -> Critic | None:
    """Fit the critic of a run's finished G; from then on sampling and evaluation keep only the
    samples it accepts, unless it keeps too few (then, with a warning, G's own). Evaluates again
    when eval.every is set. None when a stop signal came first (`gankit resume RUN` fits it then)."""

    started = time.perf_counter()
    critic = fit_critic(run.cfg, run.source.shape, run.num_classes, run._draw_real_with, run.draw_fake,
                        run.device, progress, lambda: run.guards.stop_signal is not None)
    if critic is None:
        return None
    run.critic = critic
    seconds, kept = time.perf_counter() - started, critic.acceptance
    run.log.event("drs_critic", steps=run.cfg.train.drs_steps, acceptance=round(kept, 4), seconds=round(seconds, 3))
    run.log.say(f"gankit: rejection-sampling critic fitted in {seconds:.1f} s; it keeps {100 * kept:.1f}% "
                "of G's samples")
    if not critic.usable:
        run.log.event("warning", kind="drs_fallback", message=(
            f"the critic keeps {100 * kept:.2f}% of G's samples (over {1 / max(kept, 1e-9):,.0f} draws a kept "
            "sample), so it is not used: samples and scores are G's own; more train.drs_steps may fit a better one"))
    elif run.cfg.eval.every > 0:
        run.evaluation.evaluate()
    return critic
