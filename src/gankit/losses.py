"""GAN losses and regularisers.

The adversarial losses are pure functions of D's logits on real and generated data, so they can
be checked against hand-computed numbers. `GANLoss` applies one of them to the networks, with
the regularisers (gradient penalty, R1, label smoothing, instance noise, translation); the training loop only
asks it for a D loss and a G loss.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from gankit.config import LossConfig
from gankit.models.noise import categories_of, groups_of
from gankit.registry import Registry

Tensor = torch.Tensor

# --------------------------------------------------------------------------- pure losses
# softplus(-l) = -log sigmoid(l) and softplus(l) = -log(1 - sigmoid(l)): cross-entropy from logits,
# stable for any logit size.


def ns_d(real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
    """-E[t log D(x) + (1 - t) log(1 - D(x))] - E log(1 - D(G(z))), with t the real target."""
    real_term = real_target * F.softplus(-real) + (1.0 - real_target) * F.softplus(real)
    return real_term.mean() + F.softplus(fake).mean()


def ns_g(fake: Tensor) -> Tensor:
    """Non-saturating: -E log D(G(z))."""
    return F.softplus(-fake).mean()


def minimax_g(fake: Tensor) -> Tensor:
    """The original minimax objective for G: E log(1 - D(G(z))), minimised."""
    return -F.softplus(fake).mean()


def lsgan_d(real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
    """Least squares (Mao et al.): 1/2 E (D(x) - t)^2 + 1/2 E D(G(z))^2 on raw outputs."""
    return 0.5 * ((real - real_target) ** 2).mean() + 0.5 * (fake**2).mean()


def lsgan_g(fake: Tensor) -> Tensor:
    return 0.5 * ((fake - 1.0) ** 2).mean()


def wgan_d(real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
    """Wasserstein critic: E D(G(z)) - E D(x)."""
    return fake.mean() - real.mean()


def wgan_g(fake: Tensor) -> Tensor:
    return -fake.mean()


def hinge_d(real: Tensor, fake: Tensor, real_target: float = 1.0) -> Tensor:
    """Hinge: E max(0, 1 - D(x)) + E max(0, 1 + D(G(z)))."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


@dataclass(frozen=True)
class LossPair:
    d: Callable[..., Tensor]
    g: Callable[[Tensor], Tensor]
    gradient_penalty: bool = False
    # sigmoid(D) is a probability of "real" only when D is trained by cross-entropy; the other losses
    # train a critic whose raw values are no probabilities (logged as critic_real / critic_fake)
    probabilistic: bool = False


LOSSES: Registry = Registry("loss")
LOSSES.register("ns", "non-saturating sigmoid cross-entropy (the articles' loss)")(
    LossPair(ns_d, ns_g, probabilistic=True))
LOSSES.register("minimax", "the original minimax value function; G saturates early")(
    LossPair(ns_d, minimax_g, probabilistic=True))
LOSSES.register("lsgan", "least squares GAN")(LossPair(lsgan_d, lsgan_g))
LOSSES.register("wgan-gp", "Wasserstein with gradient penalty")(LossPair(wgan_d, wgan_g, gradient_penalty=True))
LOSSES.register("hinge", "hinge loss")(LossPair(hinge_d, wgan_g))

# --------------------------------------------------------------------------- regularisers


def judge(d: nn.Module, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """D's logits, with labels only for a conditional D."""
    return d(x) if labels is None else d(x, labels)


def judge_and_code(d: nn.Module, x: Tensor, labels: Tensor | None, with_code: bool) -> tuple[Tensor, Tensor | None]:
    """D's logits and, with_code, Q's code logits from the same pass (a gankit Discriminator with a
    code head); else None for them."""
    return d(x, labels, with_code=True) if with_code else (judge(d, x, labels), None)


def info_loss(code_logits: Tensor, codes: Tensor) -> Tensor:
    """InfoGAN (Chen et al. 2016): the cross-entropy of Q's guess of G's category. Minimising it
    maximises a lower bound on the mutual information between the category and the sample (the
    bound is H(c) minus this)."""
    return F.cross_entropy(code_logits.float(), codes)


def clustering_loss(logits: Tensor, warped_logits: Tensor, eps: float = 1e-8) -> Tensor:
    """Invariant information clustering (Ji et al. 2019): minus the mutual information between the
    categories Q gives a batch and a warped copy of it, in nats, from their joint distribution over
    the batch (made symmetric). It is -ln K at best (each image's category sure, the same in both
    copies, all K used evenly) and 0 when the copies' categories are independent: the term rewards
    a sorting that is sure, consistent under warps and balanced, with no labels."""
    joint = F.softmax(logits.float(), 1).T @ F.softmax(warped_logits.float(), 1) / len(logits)
    joint = ((joint + joint.T) / 2).clamp_min(eps)
    return -(joint * (joint.log() - joint.sum(1, keepdim=True).log() - joint.sum(0, keepdim=True).log())).sum()


def mode_seeking(fake: Tensor, z: Tensor, groups: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """Mode seeking (Mao et al. 2019, MSGAN): the inverse of how far G's images lie apart per unit
    of latent distance, over pairs of samples of one group (category or class; all one group when
    None). G lowers it by keeping images apart that its noise keeps apart: a G that makes one image
    per category, whatever the noise, pays ~1/eps. Pairs are neighbours once the batch is sorted by
    group (a masked mean, so no host sync)."""
    n = len(fake)
    groups = torch.zeros(n, dtype=torch.long, device=fake.device) if groups is None else groups
    order = torch.argsort(groups * n + torch.arange(n, device=fake.device))
    # One gather, then neighbours by slicing: the same pairs and values as gathering each side of
    # every pair, with one scatter in the backward pass instead of two (0.8 ms a step fewer for
    # mnist-dcgan's batch on a 2-core CPU; the same gradient to the bit)
    fake, z, groups = fake.index_select(0, order), z.index_select(0, order), groups.index_select(0, order)
    same = (groups[1:] == groups[:-1]).float()
    image_gap = (fake[1:] - fake[:-1]).float().abs().flatten(1).mean(1)
    z_gap = (z[1:] - z[:-1]).float().abs().mean(1).clamp_min(1e-12)
    ratio = (image_gap / z_gap * same).sum() / same.sum().clamp_min(1.0)
    return 1.0 / (ratio + eps)


def top_k(fake_logits: Tensor, share: float) -> Tensor:
    """Top-k training (Sinha et al. 2020): the logits of the `share` of generated samples D finds
    most real (at least one), which alone enter G's adversarial term. A sample D rejects outright
    lies off the data, often between its modes; its gradient would pull G towards the space between
    them. Packed batches (model.pack) have one logit a pack: the packs are ranked."""
    flat = fake_logits.flatten()
    if share >= 1.0:
        return flat
    return flat.topk(max(1, round(share * len(flat)))).values


def input_gradient_sq(d: nn.Module, x: Tensor, labels: Tensor | None = None) -> Tensor:
    """|grad D|^2 for each input D judges, kept in the graph so it can be penalised. A PacGAN D
    (pack > 1) judges groups of `pack` consecutive samples: the gradient is over the whole group."""
    x = x.detach().float().requires_grad_(True)
    with torch.autocast(x.device.type, enabled=False):  # a penalty on gradients wants float32 under bf16
        (grad,) = torch.autograd.grad(judge(d, x, labels).sum(), x, create_graph=True)
    return grad.reshape(grad.shape[0] // getattr(d, "pack", 1), -1).pow(2).sum(1)


def gradient_penalty(d: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None,
                     labels: Tensor | None = None) -> Tensor:
    """WGAN-GP: E (|grad D(x_hat)| - 1)^2 at random points between real and generated samples.

    With PacGAN packing, one mixing weight is drawn per packed group so the group stays whole, and
    the norm is that of the group's gradient (D's input is the group).
    """
    pack = getattr(d, "pack", 1)
    eps = torch.rand(real.shape[0] // pack, 1, generator=generator, device=real.device, dtype=real.dtype)
    eps = eps.repeat_interleave(pack, 0).reshape(-1, *[1] * (real.dim() - 1))
    mixed = eps * real + (1 - eps) * fake
    return ((input_gradient_sq(d, mixed, labels) + 1e-12).sqrt() - 1.0).pow(2).mean()


def translate(x: Tensor, fraction: float, generator: torch.Generator | None = None) -> Tensor:
    """DiffAugment's translation (Zhao et al. 2020): each image of an (N, C, H, W) batch shifted by up
    to `fraction` of its height and width, a whole number of pixels drawn per image, with the edge
    pixels repeated into the gap (MNIST's background, where zeros would be grey in [-1, 1]).
    Differentiable in x, so G learns through it; D never sees an unshifted training image it could memorise."""
    n, _, height, width = x.shape

    def shifted_positions(size: int) -> Tensor:
        reach = int(size * fraction + 0.5)
        shift = torch.randint(-reach, reach + 1, (n, 1), generator=generator, device=x.device)
        return (torch.arange(size, device=x.device) + shift).clamp_(0, size - 1)

    rows, cols = shifted_positions(height), shifted_positions(width)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return x[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # indexing puts C last


def random_affine(x: Tensor, strength: float, generator: torch.Generator | None = None) -> Tensor:
    """Each image of an (N, C, H, W) batch through its own random affine map: rotation up to 20
    degrees, shear up to 0.3, scale within +-10% and shift up to 1/14 of the size, each times
    `strength`; bilinear, with the edge pixels repeated into the gaps (MNIST's background).
    Differentiable in x. These change a handwritten digit's style (slant, size, place), not which
    digit it is."""
    u = torch.rand(x.shape[0], 5, generator=generator, device=x.device) * 2 - 1
    angle = u[:, 0] * (math.radians(20) * strength)
    scale = 1 + u[:, 1] * (0.1 * strength)
    shear = u[:, 2] * (0.3 * strength)
    shift = u[:, 3:] * (2 / 14 * strength)  # affine_grid's units: the image spans [-1, 1]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, shear - sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    with torch.autocast(x.device.type, enabled=False):  # the grid and the sampling in float32, whatever x is
        grid = affine_grid(theta, x.shape[-2], x.shape[-1])
        warped = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return warped.to(x.dtype)


def affine_grid(theta: Tensor, height: int, width: int) -> Tensor:
    """F.affine_grid(theta, (N, C, height, width), align_corners=False) as two broadcast
    multiply-adds: the same sampling points to float rounding (1e-6), at a quarter of the time for
    128 grids of 28x28 on a 2-core CPU (0.44 against 1.7 ms), where aten's grid goes through a
    batched matrix product of 3-wide rows."""
    if theta.shape[-2:] != (2, 3):
        raise ValueError(f"affine_grid takes (N, 2, 3) maps, not {tuple(theta.shape)}")
    # pixel centres, as align_corners=False places them: (2j + 1) / size - 1
    xs = ((torch.arange(width, device=theta.device, dtype=theta.dtype) * 2 + 1) / width - 1).view(1, 1, width)
    ys = ((torch.arange(height, device=theta.device, dtype=theta.dtype) * 2 + 1) / height - 1).view(1, height, 1)
    t = theta.reshape(-1, 6, 1, 1)
    return torch.stack([t[:, 0] * xs + t[:, 1] * ys + t[:, 2], t[:, 3] * xs + t[:, 4] * ys + t[:, 5]], -1)


def r1_penalty(d: nn.Module, real: Tensor, labels: Tensor | None = None) -> Tensor:
    """R1 (Mescheder et al. 2018): E |grad D(x)|^2 on real data; the caller scales by gamma/2."""
    return input_gradient_sq(d, real, labels).mean()


def falling_to_zero(value: float, step: int, anneal: int) -> float:
    """`value` lowered linearly to 0 over the first `anneal` steps (0: `value` at every step)."""
    if value == 0 or anneal == 0:
        return value
    return value * max(0.0, 1.0 - step / anneal)


class GANLoss:
    """One adversarial loss plus its regularisers, applied to a generator and a discriminator."""

    def __init__(self, cfg: LossConfig, z_dim: int = 0, z_std: float = 1.0):
        self.cfg = cfg
        self.z_dim = z_dim  # where a latent's one-hot category starts (model.z_dim), for the InfoGAN term
        self.z_std = z_std  # the noise's spread (model.z_std): mode seeking measures latent gaps in its units
        if cfg.info_weight > 0 and z_dim < 1:
            raise ValueError("loss.info_weight > 0 needs GANLoss(cfg, z_dim=model.z_dim) to find G's categories")
        self.pair: LossPair = LOSSES.get(cfg.name)
        # the stats of terms computed on some steps only (lazy R1, the InfoGAN terms with
        # loss.info_every > 1), where last computed: every log step shows them
        self._last_stats: dict[str, Tensor] = {}

    def forget_last_stats(self) -> None:
        """Drop the values kept for the log from the terms' last steps (R1's, the InfoGAN terms'):
        after a rollback or a resume they belong to steps the run no longer has."""
        self._last_stats = {}

    def noise_std(self, step: int) -> float:
        """Instance noise, annealed linearly to 0 over `instance_noise_anneal` steps."""
        return falling_to_zero(self.cfg.instance_noise, step, self.cfg.instance_noise_anneal)

    def top_k_share(self, step: int) -> float:
        """The share of G's batch its adversarial term counts at `step` (loss.top_k), falling
        linearly from 1 over loss.top_k_anneal steps."""
        share, anneal = self.cfg.top_k, self.cfg.top_k_anneal
        if share >= 1.0 or anneal == 0:
            return share
        return max(share, 1.0 - (1.0 - share) * step / anneal)

    def mode_seeking_weight(self, step: int) -> float:
        """loss.mode_seeking at `step`, falling linearly to 0 over loss.mode_seeking_anneal steps
        (0: constant): the term can keep G's noise alive early and then leave the digits alone."""
        return falling_to_zero(self.cfg.mode_seeking, step, self.cfg.mode_seeking_anneal)

    def _d_input(self, x: Tensor, step: int, generator: torch.Generator | None) -> Tensor:
        """What D sees of a real or generated batch: translated (loss.translate), then noisy (instance noise)."""
        if self.cfg.translate > 0:
            x = translate(x, self.cfg.translate, generator)
        std = self.noise_std(step)
        if std == 0:
            return x
        return x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)

    def d_loss(self, d: nn.Module, real: Tensor, fake: Tensor, step: int,
               generator: torch.Generator | None = None, labels: Tensor | None = None,
               z: Tensor | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """D's loss on a real and a (detached) generated batch of the same labels, plus stats for the log.
        `z`: the generated batch's latent, whose categories the InfoGAN term needs (loss.info_weight > 0)."""
        loss, _, stats = self.d_and_g_loss(d, real, fake.detach(), step, generator, labels, with_g=False, z=z)
        return loss, stats

    def d_and_g_loss(self, d: nn.Module, real: Tensor, fake: Tensor, step: int,
                     generator: torch.Generator | None = None,
                     labels: Tensor | None = None, with_g: bool = True,
                     z: Tensor | None = None) -> tuple[Tensor, Tensor | None, dict[str, Tensor]]:
        """D's loss and G's loss from one pass of D over a real and a generated batch (simultaneous
        updates, as the TensorFlow DCGAN tutorial): when `fake` keeps its graph, G's loss reaches G.
        D's loss then reaches G too: the caller takes its gradient for D's weights only."""
        real_in, fake_in = self._d_input(real, step, generator), self._d_input(fake, step, generator)
        codes = self._codes(z, step)
        same_pass = codes is not None and self.cfg.info_warp == 0  # Q reads D's pass over the batch
        sorting_real = self._sorts_real(z, step)
        real_logits, fake_logits, code_logits, real_code_logits = self._judge_both(
            d, real_in, fake_in, labels, same_pass, sorting_real)
        if codes is not None and not same_pass:  # loss.info_warp: Q judges warped copies
            code_logits, codes = self._warped_code_logits(d, fake, labels, codes, generator)
        loss = self.pair.d(real_logits, fake_logits, 1.0 - self.cfg.label_smoothing)
        g_loss = self.pair.g(top_k(fake_logits, self.top_k_share(step))) if with_g else None
        stats = self._judgement_stats(real_logits.detach(), fake_logits.detach())
        if sorting_real:  # loss.info_real: Q sorts the real batch and a warped copy alike
            loss = loss + self.cfg.info_real * self.sorting_loss(d, real, generator, labels, real_code_logits)
        if code_logits is not None:
            # Q learns with D's loss, G with its own: both lower the same cross-entropy
            cross_entropy = info_loss(code_logits, codes)
            info = self.cfg.info_weight * cross_entropy
            loss, g_loss = loss + info, (g_loss + info if with_g else None)
            self._last_stats["info"] = cross_entropy.detach()
        seeking = self.mode_seeking_weight(step) if with_g else 0.0
        if seeking > 0:
            g_loss = g_loss + seeking * self._mode_seeking(fake, z, labels)
        if self.pair.gradient_penalty and self.cfg.gp_weight > 0:
            gp = gradient_penalty(d, real_in, fake_in.detach(), generator, labels)
            loss = loss + self.cfg.gp_weight * gp
            stats["gp"] = gp.detach()
        if self.cfg.r1_gamma > 0 and step % self.cfg.r1_every == 0:
            # Lazy regularisation (Karras et al. 2020): every r1_every-th step, r1_every times the
            # weight, the same penalty on average for a fraction of its cost.
            r1 = r1_penalty(d, real_in, labels)
            loss = loss + 0.5 * self.cfg.r1_gamma * self.cfg.r1_every * r1
            self._last_stats["r1"] = r1.detach()
        # a log step between the terms' steps (every one of them when both intervals are even, as
        # in mnist-dcgan's InfoGAN term) shows their values where last computed
        stats.update(self._last_stats)
        return loss, g_loss, stats

    def sorting_loss(self, d: nn.Module, real: Tensor, generator: torch.Generator | None = None,
                     labels: Tensor | None = None, code_logits: Tensor | None = None) -> Tensor:
        """Q's sorting of real images (loss.info_real, unweighted): the clustering loss between Q's
        categories for the batch (`code_logits` when D's pass over it gave them already) and for a
        randomly warped copy of it. Its mutual information is kept for the log."""
        if code_logits is None:
            code_logits = judge_and_code(d, real, labels, True)[1]
        warped = random_affine(real, self.cfg.info_warp, generator)
        clustering = clustering_loss(code_logits, judge_and_code(d, warped, labels, True)[1])
        self._last_stats["info_real"] = -clustering.detach()  # the mutual information, ln K at best
        return clustering

    def _sorts_real(self, z: Tensor | None, step: int) -> bool:
        """Whether Q sorts the real batch at this step (loss.info_real): on every
        loss.info_real_every-th step, or with 0 there on the InfoGAN term's steps (loss.info_every)."""
        if self.cfg.info_real == 0 or self.cfg.info_weight == 0 or z is None:
            return False
        return step % (self.cfg.info_real_every or self.cfg.info_every) == 0

    def _codes(self, z: Tensor | None, step: int) -> Tensor | None:
        """G's categories from its latent, when the InfoGAN term is on at this step (else None)."""
        if self.cfg.info_weight == 0 or z is None or step % self.cfg.info_every:
            return None
        return categories_of(z, self.z_dim)

    def _warped_code_logits(self, d: nn.Module, fake: Tensor, labels: Tensor | None, codes: Tensor,
                            generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Q's code logits on randomly warped copies of the first loss.info_warp_share of G's images
        (loss.info_warp), and the categories they carry. The batch is drawn at random, so its first
        rows are a random share of it. The copies get a pass of D of their own: D's verdict, and
        the batch-norm statistics it is computed with, stay on the images as G made them (with the
        copies in D's pass over the batch instead, a quarter of it warped, the digits came out
        worse on both seeds tried; docs/results.md). The copies are of G's images as made, without
        loss.translate or instance noise; that pass also moves D's batch-norm running statistics."""
        pack = getattr(d, "pack", 1)
        rows = min(len(fake), max(pack, round(self.cfg.info_warp_share * len(fake) / pack) * pack))
        some = None if labels is None else labels[:rows]
        warped = random_affine(fake[:rows], self.cfg.info_warp, generator)
        return judge_and_code(d, warped, some, True)[1], codes[:rows]

    def _judgement_stats(self, real_logits: Tensor, fake_logits: Tensor) -> dict[str, Tensor]:
        """Mean D(x) and D(G(z)) as probabilities (cross-entropy losses), else the critic's raw means."""
        if self.pair.probabilistic:
            return {"d_real": torch.sigmoid(real_logits).mean(), "d_fake": torch.sigmoid(fake_logits).mean()}
        return {"critic_real": real_logits.float().mean(), "critic_fake": fake_logits.float().mean()}

    @staticmethod
    def _judge_both(d: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None, fake_code: bool = False,
                    real_code: bool = False) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """D's logits on both batches, as float32 (under bfloat16 autocast the losses stay float32),
        and Q's code logits on the generated batch (fake_code) and on the real one (real_code),
        from the same passes (else None)."""
        if not getattr(d, "joint_batch", True):  # batch norm in D: keep the statistics apart
            # real first: D's running statistics as before
            real_logits, real_codes = judge_and_code(d, real, labels, real_code)
            fake_logits, fake_codes = judge_and_code(d, fake, labels, fake_code)
            return real_logits.float(), fake_logits.float(), fake_codes, real_codes
        # One forward pass over both halves: half the kernel launches of two passes.
        both = None if labels is None else torch.cat([labels, labels])
        logits, codes = judge_and_code(d, torch.cat([real, fake]), both, fake_code or real_code)
        n_real = len(real) // getattr(d, "pack", 1)
        logits = logits.float()
        fake_codes = codes[len(real):] if fake_code else None  # one row a sample, packed or not
        return logits[:n_real], logits[n_real:], fake_codes, codes[:len(real)] if real_code else None

    def g_loss(self, g: nn.Module, d: nn.Module, z: Tensor, step: int,
               generator: torch.Generator | None = None, labels: Tensor | None = None,
               fake: Tensor | None = None) -> Tensor:
        """G's loss on G(z); `fake` is G(z) already computed with its graph (train.schedule = "shared")."""
        if fake is None:
            fake = g(z, labels)  # a gankit Generator takes labels=None when unconditional
        codes = self._codes(z, step)
        same_pass = codes is not None and self.cfg.info_warp == 0  # Q reads D's pass over the batch
        logits, code_logits = judge_and_code(d, self._d_input(fake, step, generator), labels, same_pass)
        if codes is not None and not same_pass:  # loss.info_warp: Q judges warped copies
            code_logits, codes = self._warped_code_logits(d, fake, labels, codes, generator)
        loss = self.pair.g(top_k(logits.float(), self.top_k_share(step)))
        seeking = self.mode_seeking_weight(step)
        if seeking > 0:
            loss = loss + seeking * self._mode_seeking(fake, z, labels)
        return loss if code_logits is None else loss + self.cfg.info_weight * info_loss(code_logits, codes)

    def _mode_seeking(self, fake: Tensor, z: Tensor | None, labels: Tensor | None) -> Tensor:
        """The MSGAN term (unweighted), over pairs of one category (or class)."""
        if z is None:
            raise ValueError("loss.mode_seeking needs the latent z of the generated batch")
        if not self.z_dim:
            return mode_seeking(fake, z, labels)
        return mode_seeking(fake, z[:, :self.z_dim] / self.z_std, groups_of(z, self.z_dim, labels))
