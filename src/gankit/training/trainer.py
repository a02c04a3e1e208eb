"""The training loop: alternate D and G updates, log, snapshot, checkpoint. No GAN maths here.

One *step* is `n_d` discriminator updates followed by `n_g` generator updates. Everything the
run needs to continue exactly (weights, optimisers, EMA, step, every random state) is in
`state_dict()`, which checkpoints hold.
"""
from __future__ import annotations

import json
import math
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm import tqdm

import gankit
from gankit import config as config_mod
from gankit.config import RunConfig
from gankit.data import Source, make_source
from gankit.data.images import to_uint8
from gankit.errors import TrainingError, UserError
from gankit.io import atomic_write_text
from gankit.losses import GANLoss
from gankit.metrics import evaluate as metrics_eval
from gankit.models import MODELS
from gankit.models.base import eval_mode, has_batch_norm
from gankit.models.noise import sample_noise
from gankit.training import checkpoint as ckpt
from gankit.training import distributed
from gankit.training.health import CpuShare, HealthMonitor, nonfinite, nonfinite_parts
from gankit.training.optim import make_optimizer
from gankit.training import tensorboard
from gankit.training.rejection import Critic, fit_critic, generator_draw, rejection_sample
from gankit.rundir import hold_run, is_run, mark_run
from gankit.training.state import Normalizer, capture_rng, measure_batch_norm, output_to_data, restore_rng
from gankit.training.views import decision_grid, features


RANK_SEED_STRIDE = 7919  # each process of a multi-process run draws its own data and noise


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("train.device = 'cuda' but no CUDA GPU is visible; use --device cpu or auto")
    world = distributed.world()
    if name == "cuda" and world.active:
        return torch.device("cuda", world.local_rank)
    return torch.device(name)


def update_schedule(t) -> str:
    """train.schedule, with the earlier train.share_fake = true read as "shared"."""
    if t.share_fake and t.schedule != "alternating":
        raise UserError(f"train.share_fake = true is the earlier name of train.schedule = 'shared'; it cannot "
                        f"go with train.schedule = '{t.schedule}': drop share_fake")
    schedule = "shared" if t.share_fake else t.schedule
    if schedule == "simultaneous" and (t.n_d != 1 or t.n_g != 1):
        raise UserError(f"train.schedule = 'simultaneous' makes one D and one G update from one pass; it needs "
                        f"train.n_d = train.n_g = 1 (got {t.n_d} and {t.n_g}): use 'alternating' for more")
    return schedule


def resolve_precision(precision: str, device: torch.device, is_image: bool) -> str:
    """train.precision = auto: bf16 for image networks where the device computes it fast, else fp32.
    GPUs: those with bfloat16 units (Ampere and later). CPUs: those with AMX tiles (Intel Sapphire
    Rapids and later), where oneDNN runs bfloat16 matrix products on them (measured:
    docs/benchmarks.md); AVX-512-BF16 alone is left at fp32 (not measured to pay). Vector data stays
    fp32: its networks are small (nothing to gain) and bfloat16's 8-bit mantissa would blur
    coordinates in raw units (seed-quadratic's y reaches 2,510)."""
    if precision != "auto":
        return precision
    if not is_image:
        return "fp32"
    if device.type == "cuda":  # is_bf16_supported() also counts emulation (T4, V100): compute capability 8+
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp32"
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    return "bf16" if device.type == "cpu" and amx() else "fp32"


def default_threads(is_image: bool) -> int:
    """train.threads = 0: one thread for vector data (its small networks gain nothing from more, and a
    run beside another keeps its speed: two runs of 1,000 quadratic steps at once on 2 cores took
    32 s each with 2 threads, 2.4 s with one; docs/benchmarks.md); image networks keep PyTorch's own
    count (the cores, or OMP_NUM_THREADS when set; torchrun sets it to 1 for several processes)."""
    return torch.get_num_threads() if is_image else 1


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """PyTorch's CPU thread count for the block, then back to what it was (a notebook keeps its own)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a saved optimiser state, keeping the implementation this run chose (fused or foreach: a
    run saved by another version or machine may have used the other) and every state tensor laid
    out like its weight: CPU fused Adam assumes it (with contiguous moments beside channels-last
    weights, as an earlier version saved them, it silently updates the wrong elements)."""
    chosen = [{k: g.get(k) for k in ("fused", "foreach")} for g in opt.param_groups]
    opt.load_state_dict(saved)
    for group, flags in zip(opt.param_groups, chosen):
        group.update(flags)
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape:
                    opt.state[p][key] = torch.empty_like(p).copy_(value)
                elif key == "step" and torch.is_tensor(value) and flags.get("fused"):
                    opt.state[p][key] = value.to(device=p.device, dtype=torch.float32)


def per_process_batch(batch_size: int, processes: int) -> int:
    """train.batch_size is the batch of one step over all processes; each draws an equal share."""
    if batch_size % processes:
        raise UserError(f"train.batch_size = {batch_size} does not split over {processes} processes; "
                        f"give a multiple of {processes}")
    return batch_size // processes


class Trainer:
    """Owns the networks, optimisers and random states of one run, and its run directory."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, source: Source | None = None):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.world = distributed.world()
        self.batch_size = per_process_batch(cfg.train.batch_size, self.world.size)
        self.device = resolve_device(cfg.train.device)
        self.source = source if source is not None else make_source(cfg.data)
        self.is_image = self.source.kind == "image"
        self.norm = self._make_normalizer()
        self.num_classes = self.source.num_classes if cfg.model.conditional else 0
        torch.manual_seed(cfg.train.seed)  # weight initialisation
        g, d = MODELS.get(cfg.model.name)(cfg.model, self.source.shape, self.num_classes)
        # channels-last convolutions: oneDNN's (and cuDNN's) fastest layout, above all in bfloat16
        self.memory_format = torch.channels_last if self.is_image and cfg.model.name == "dcgan" else \
            torch.contiguous_format
        self.g = g.to(self.device, memory_format=self.memory_format)
        self.d = d.to(self.device, memory_format=self.memory_format)
        self.loss = GANLoss(cfg.loss)
        self._check_penalties_fit_d()
        if cfg.train.tensorboard:
            tensorboard.check_available()  # refused before the run folder is touched
        self.tensorboard: tensorboard.TensorBoardLog | None = None  # open while fit() runs
        self.ema = self._make_ema()
        # the weights each update steps (backward(inputs=...) refuses frozen ones)
        self.g_params = [p for p in self.g.parameters() if p.requires_grad]
        self.d_params = [p for p in self.d.parameters() if p.requires_grad]
        self.opt_g = make_optimizer(self.g_params, cfg.optim_g)
        self.opt_d = make_optimizer(self.d_params, cfg.optim_d)
        self.schedule = update_schedule(cfg.train)
        self.bf16 = resolve_precision(cfg.train.precision, self.device, self.is_image) == "bf16"
        self.threads = cfg.train.threads or default_threads(self.is_image)
        rank_seed = cfg.train.seed + RANK_SEED_STRIDE * self.world.rank  # the same weights, other batches
        if self.world.active:
            torch.manual_seed(rank_seed)  # dropout masks differ between processes too
        self.data_rng = torch.Generator().manual_seed(rank_seed + 1)
        self.noise_rng = torch.Generator(self.device).manual_seed(rank_seed + 2)
        self._rng_ranks: list[dict[str, Any]] | None = None  # every process's random state, at the last save
        self.step, self.elapsed = 0, 0.0
        self.fixed_real, self.fixed_z, self.fixed_labels = self._fixed_inputs()
        self._stop_signal: int | None = None
        self._stop_agreed = False  # several processes: every one of them stops after this step
        self._rollbacks, self._lr_scale = 0, 1.0  # divergence guard: rollbacks so far, their rate factor
        self.schedule_steps = cfg.train.steps  # the learning-rate schedule's length; a longer resume holds its end
        self._sampler_copy: nn.Module | None = None  # the EMA G with measured batch norm, until the EMA moves
        self._resume_note: str | None = None  # said once training starts, when a resume could not be exact
        self.health = HealthMonitor()
        self.critic: Critic | None = None  # discriminator rejection sampling, fitted after training

    # ------------------------------------------------------------------ set-up helpers
    def _make_normalizer(self) -> Normalizer:
        """Vectors: standardised if asked. Images: scaled to G's output range by the source itself."""
        cfg = self.cfg
        if self.is_image:
            if cfg.model.g_output not in ("tanh", "sigmoid"):
                raise UserError(f"image data needs model.g_output = 'tanh' (pixels in [-1, 1]) or 'sigmoid' "
                                f"([0, 1]), not '{cfg.model.g_output}'")
            self.source.output = cfg.model.g_output
            return Normalizer.identity(1)
        if cfg.model.conditional:
            raise UserError(f"model.conditional = true needs labelled data; '{cfg.data.name}' has no labels")
        return Normalizer(*self.source.moments()) if cfg.data.normalize else Normalizer.identity(self.source.dim)

    def _check_penalties_fit_d(self) -> None:
        """WGAN-GP and R1 penalise each sample's input gradient; batch norm in D mixes the samples of a
        batch into every output, so those gradients (and the penalties) would be wrong."""
        c = self.cfg.loss
        penalty = ("loss.name = 'wgan-gp'" if self.loss.pair.gradient_penalty and c.gp_weight > 0 else
                   "loss.r1_gamma" if c.r1_gamma > 0 else None)
        if penalty and has_batch_norm(self.d):
            raise UserError(f"{penalty} penalises per-sample gradients, which batch norm in D couples across the "
                            "batch; 28x28 dcgan: set model.d_batch_norm=false; 32/64-pixel dcgan: set "
                            "model.spectral_norm=true (it replaces D's batch norm)")

    def _make_ema(self) -> AveragedModel | None:
        """An exponential moving average of G's weights (and buffers) for sampling. Its decay ramps
        up as min(ema_decay, (1 + t) / (10 + t)) after t steps (TensorFlow's ExponentialMovingAverage
        with num_updates): a constant 0.999 would leave a 300-step run's average 74% its initial
        random weights. It depends on the step alone, so a resumed run averages exactly as before."""
        if self.cfg.train.ema_decay <= 0:
            return None

        def average(ema_params: list[torch.Tensor], params: list[torch.Tensor], _count: torch.Tensor) -> None:
            decay = min(self.cfg.train.ema_decay, (1 + self.step) / (10 + self.step))
            if ema_params[0].is_floating_point():  # AveragedModel passes one dtype at a time
                torch._foreach_lerp_(ema_params, params, 1.0 - decay)  # as get_ema_multi_avg_fn does
            else:  # integer buffers (batch norm's num_batches_tracked), as get_ema_multi_avg_fn does
                for ema, param in zip(ema_params, params):
                    ema.copy_(ema * decay + param * (1 - decay))

        return AveragedModel(self.g, multi_avg_fn=average, use_buffers=True)

    def _fixed_inputs(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The same real data, noise and labels in every snapshot, so pictures compare across steps.
        Images: 64 for a grid, or 8 per class (one row each) when conditional."""
        pack, rng = self.cfg.model.pack, torch.Generator().manual_seed(self.cfg.train.seed + 3)
        if self.is_image:
            n = 8 * self.num_classes if self.num_classes else 64
        else:
            n = self.cfg.viz.n_points // pack * pack or pack
        real, _ = self.source.sample_labeled(n, rng)
        z = sample_noise(n, self.cfg.model, rng).to(self.device)
        labels = torch.arange(self.num_classes).repeat_interleave(8).to(self.device) if self.num_classes else None
        return real, z, labels

    @property
    def sampler_g(self) -> nn.Module:
        """The generator to sample from: the EMA copy when there is one, with its batch-norm
        statistics measured for its own weights (state.measure_batch_norm), again each time the EMA moves."""
        if self.ema is None:
            return self.g
        if self._sampler_copy is None:
            m = self.cfg.model
            self._sampler_copy = measure_batch_norm(self.ema.module, m, self.num_classes)
        return self._sampler_copy

    # ------------------------------------------------------------------ one step
    def draw_real(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._draw_real_with(self.batch_size, self.data_rng)

    def draw_noise(self) -> torch.Tensor:
        m = self.cfg.model
        return sample_noise(self.batch_size, m, self.noise_rng, self.device)

    def _autocast(self) -> torch.autocast:
        """bfloat16 forward passes (train.precision, resolved in resolve_precision) where PyTorch deems
        it safe (matrix products, convolutions); losses, reductions and the weights stay float32.
        bfloat16 has float32's range, so no loss scaling is needed (float16 would need a GradScaler)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _gradients(self, params: list[nn.Parameter], opt: torch.optim.Optimizer, loss: torch.Tensor,
                   retain_graph: bool = False) -> None:
        """The gradient of `loss` for these weights only: G's update computes no gradient for D's
        weights (autograd skips that work), nor D's for G's. Averaged over processes when several."""
        opt.zero_grad(set_to_none=True)
        loss.backward(inputs=params, retain_graph=retain_graph)
        if self.world.active:
            distributed.average_gradients(params, self.world.size)

    def _update(self, params: list[nn.Parameter], opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        self._gradients(params, opt, loss)
        opt.step()

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The batch D is trained on: without a graph, unless the first G update reuses it (shared)."""
        with self._autocast(), torch.set_grad_enabled(self.schedule == "shared"):
            return self.g(z, labels)

    def train_step(self, snapshot: bool = False, log: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
        """One step of the update schedule (train.schedule). Generated batches use the real batch's
        labels. Returns the stats to log (when `log`) and, if asked, the snapshot arrays."""
        views: dict[str, np.ndarray] = {}
        (real, labels), z = self.draw_real(), self.draw_noise()
        article_views = snapshot and not self.is_image
        if article_views:
            views.update(self._views("d0", "g0"))
        between = (lambda: views.update(self._views("d1", "g0"))) if article_views else None  # D moved, G not yet
        if self.schedule == "simultaneous":
            d_loss, g_loss, stats, real, fake = self._simultaneous_update(real, labels, z, between)
        else:
            d_loss, stats, real, fake, labels = self._d_updates(real, labels, z)
            if between is not None:
                between()
            g_loss = self._g_updates(fake, z, labels)
        if self.ema is not None:
            self.ema.update_parameters(self.g)
            self._sampler_copy = None  # measured for the EMA weights before this update
        if article_views:
            views.update(self._views("d1", "g1", with_grid=True))
        elif snapshot:
            views["images"] = self.sample_images(self.fixed_z, self.fixed_labels)
        if not log:
            return {}, views
        diversity = fake.detach().float().std(0).mean() / real.float().std(0).mean().clamp_min(1e-12)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **stats, "diversity": diversity}, views

    def _d_updates(self, real, labels, z):
        """train.n_d D updates on generated batches (a new real and generated batch for each unless
        train.reuse_batch). Returns the last loss and stats, and the last batches."""
        t = self.cfg.train
        fake = self.generate(z, labels)
        for i in range(t.n_d):
            if i > 0 and not t.reuse_batch:
                (real, labels), z = self.draw_real(), self.draw_noise()
                fake = self.generate(z, labels)
            with self._autocast():
                d_loss, stats = self.loss.d_loss(self.d, real, fake, self.step, self.noise_rng, labels)
            self._update(self.d_params, self.opt_d, d_loss)
        return d_loss, stats, real, fake, labels

    def _g_updates(self, fake, z, labels) -> torch.Tensor:
        """train.n_g G updates through the updated D; the first reuses D's batch when shared (G has not
        changed since it made it), the others draw new noise unless train.reuse_batch."""
        t = self.cfg.train
        for i in range(t.n_g):
            shared = fake if self.schedule == "shared" and i == 0 else None
            if shared is None and not t.reuse_batch:
                z = self.draw_noise()
            with self._autocast():
                g_loss = self.loss.g_loss(self.g, self.d, z, self.step, self.noise_rng, labels, fake=shared)
            self._update(self.g_params, self.opt_g, g_loss)
        return g_loss

    def _simultaneous_update(self, real, labels, z, between):
        """One G forward and one D pass over the real and the generated batch give both losses; D and G
        each step on the gradient for their own weights (two backward passes through D's graph)."""
        with self._autocast():
            fake = self.g(z, labels)
            d_loss, g_loss, stats = self.loss.d_and_g_loss(self.d, real, fake, self.step, self.noise_rng, labels)
        self._gradients(self.d_params, self.opt_d, d_loss, retain_graph=True)  # G's loss still needs D's graph
        self._gradients(self.g_params, self.opt_g, g_loss)  # both before either step: D's weights are in the graph
        self.opt_d.step()
        if between is not None:
            between()
        self.opt_g.step()
        return d_loss, g_loss, stats, real, fake

    @torch.no_grad()
    def _views(self, d_tag: str, g_tag: str, with_grid: bool = False) -> dict[str, np.ndarray]:
        """The article's pictures at one moment of the step. Eval mode: batch-norm statistics do not
        move and dropout draws no random numbers, so snapshots leave training bit for bit the same."""
        with eval_mode(self.g), eval_mode(self.d):
            return self._views_now(d_tag, g_tag, with_grid)

    def _views_now(self, d_tag: str, g_tag: str, with_grid: bool) -> dict[str, np.ndarray]:
        fake_model = self.g(self.fixed_z)
        real_model = self.norm.to_model(self.fixed_real.to(self.device))
        out = {
            f"fake_{g_tag}": self.norm.to_data(fake_model).cpu().numpy(),
            f"feat_real_{d_tag}": features(self.d, real_model),
            f"feat_fake_{d_tag}_{g_tag}": features(self.d, fake_model),
        }
        if with_grid and self.source.dim == 2 and self.cfg.model.pack == 1:
            points = np.concatenate([self.fixed_real.numpy(), out[f"fake_{g_tag}"]])
            out.update(decision_grid(self.d, self.norm.to_model, points, self.cfg.viz.grid_size, self.device))
        return out

    @torch.no_grad()
    def sample_images(self, z: torch.Tensor, labels: torch.Tensor | None) -> np.ndarray:
        """uint8 (N, C, H, W) from the sampling generator in eval mode: what `gankit sample` gives."""
        with eval_mode(self.sampler_g) as g:
            return to_uint8(g(z, labels), self.cfg.model.g_output)

    # ------------------------------------------------------------------ the loop
    def fit(self, steps: int | None = None, progress: bool = True) -> "Trainer":
        """Train until `steps` (default: train.steps) steps are done; resumable at any checkpoint."""
        total = steps or self.cfg.train.steps
        with torch_threads(self.threads):
            if not self.world.is_main:  # in a multi-process run, process 0 alone writes, prints and holds the run
                return self._fit(total, progress)
            with hold_run(self.run_dir):
                self._prepare_run_dir()
                if self.cfg.train.tensorboard:
                    self.tensorboard = tensorboard.TensorBoardLog(self.run_dir, config_mod.dumps(self.cfg))
                try:
                    return self._fit(total, progress)
                finally:
                    if self.tensorboard is not None:
                        self.tensorboard.close()
                        self.tensorboard = None

    def _fit(self, total: int, progress: bool) -> "Trainer":
        main = self.world.is_main
        if self.step == 0:
            self._save_or_warn()  # a point to resume or roll back to from the very start
        self._bar = tqdm(total=total, initial=self.step, desc="train", unit="step", file=sys.stderr,
                         disable=not (progress and main), dynamic_ncols=True, mininterval=0.5)
        self._started = time.perf_counter() - self.elapsed
        self.cpu_share = CpuShare(self.threads)  # measured from here: set-up and loading are no training
        if self._resume_note:
            self._event("warning", kind="resume_processes", message=self._resume_note)
            self._resume_note = None
        size = len(self.source) if hasattr(self.source, "__len__") else None
        if self.step == 0 and size is not None and size < self.cfg.train.batch_size:
            self._event("warning", kind="small_data", message=f"the data set has {size} samples, fewer than "
                        f"train.batch_size = {self.cfg.train.batch_size}: every batch repeats samples, and G can "
                        "learn the points themselves; more data, or a smaller batch, helps")
        if self.step < total:
            self.critic = None  # G is about to change: a critic of the old G would be wrong
        with self._handle_stop_signals():
            while self.step < total and not self._stopping():
                self._run_one_step(total)
            self._bar.close()
            self._check_processes_in_step()
            self._save_final()
            if self._stop_signal is None and self.cfg.train.drs_steps and self.critic is None and main:
                if self.fit_rejection_critic(progress) is not None:
                    self._save_final(gather=False)  # process 0 alone: the others have finished
        if self._stop_signal is not None:
            self._exit_on_signal()
        return self

    def _save_final(self, gather: bool = True) -> None:
        bad = self._nonfinite_state()  # a stop signal can end a run between the checks of _run_one_step
        if bad:
            raise TrainingError(f"non-finite {', '.join(bad)} at step {self.step}, so it was not saved; "
                                f"`gankit resume {self.run_dir}` continues from the last checkpoint")
        if self._save_or_warn(gather) is None:
            raise TrainingError(f"the final checkpoint of {self.run_dir} could not be written; free disk space, "
                                f"then `gankit resume {self.run_dir}` continues from the last one saved")

    def fit_rejection_critic(self, progress: bool = True) -> Critic | None:
        """Fit the density-ratio critic of the finished G (training/rejection.py); from then on
        sampling and evaluation keep only the samples it accepts. Evaluates again when eval.every is set.
        None when a stop signal came first (`gankit resume RUN` fits it then)."""
        started = time.perf_counter()
        self.critic = fit_critic(self.cfg, self.source.shape, self.num_classes, self._draw_real_with,
                                 self._draw_fake, self.device, progress, lambda: self._stop_signal is not None)
        if self.critic is None:
            return None
        seconds = time.perf_counter() - started
        self._event("drs_critic", steps=self.cfg.train.drs_steps, acceptance=round(self.critic.acceptance, 4),
                    seconds=round(seconds, 3))
        tqdm.write(f"gankit: rejection-sampling critic fitted in {seconds:.1f} s; it keeps "
                   f"{100 * self.critic.acceptance:.1f}% of G's samples", file=sys.stderr)
        if not self.critic.usable:
            self._event("warning", kind="drs_fallback", message=(
                f"the critic keeps {100 * self.critic.acceptance:.2f}% of G's samples (over "
                f"{1 / max(self.critic.acceptance, 1e-9):,.0f} draws a kept sample), so it is not used: "
                "samples and scores are G's own; more train.drs_steps may fit a better one"))
        if self.cfg.eval.every > 0 and self.critic.usable:
            self.evaluate()
        return self.critic

    def _draw_real_with(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, labels = self.source.sample_labeled(n, rng)
        batch = batch.to(self.device, non_blocking=True)
        batch = batch.contiguous(memory_format=self.memory_format) if self.is_image else self.norm.to_model(batch)
        return batch, (labels.to(self.device, non_blocking=True) if labels is not None and self.num_classes else None)

    @property
    def _draw_fake(self):
        return generator_draw(self.sampler_g, self.cfg, self.num_classes, self.device)

    def _set_learning_rates(self, step: int) -> None:
        """Base rate x schedule factor at this step x the rollback scale. The schedule spans the steps
        the run was started with (schedule_steps, kept in checkpoints): a resume to a larger total
        continues at the schedule's final rate instead of stretching it."""
        t = self.cfg.train
        progress = min(step / max(self.schedule_steps - 1, 1), 1.0)  # the last step runs at lr_final
        if t.lr_schedule == "linear":
            factor = 1.0 - (1.0 - t.lr_final) * progress
        elif t.lr_schedule == "cosine":
            factor = t.lr_final + (1.0 - t.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))
        else:
            factor = 1.0
        for opt, section in ((self.opt_g, self.cfg.optim_g), (self.opt_d, self.cfg.optim_d)):
            for group in opt.param_groups:
                group["lr"] = section.lr * factor * self._lr_scale

    def _run_one_step(self, total: int) -> None:
        if self.cfg.train.lr_schedule != "constant" or self._lr_scale != 1.0:
            self._set_learning_rates(self.step)
        snap = self.world.is_main and self._is_snapshot_step(self.step + 1, total)
        logging = (self.step + 1) % self.cfg.train.log_every == 0 or self.step + 1 == total
        self.cpu_share.begin()
        stats, views = self.train_step(snapshot=snap, log=logging)
        self.cpu_share.end()
        self.step += 1
        self.elapsed = time.perf_counter() - self._started
        if logging:
            if self.world.active:  # the processes meet here, not every step: no host sync in between
                stats = distributed.mean_over_processes(stats)
                if distributed.any_process(self._stop_signal is not None, self.device):
                    self._stop_signal = self._stop_signal or signal.SIGTERM
                    self._stop_agreed = True
            row = self._log(stats)
            bad = nonfinite(row)
            if bad:
                self._on_nonfinite(bad)
                return
            for kind, message in self.health.check(row):
                self._event("warning", kind=kind, message=message)
            # one CPU process: several wait for each other at every gradient exchange, by design
            busy = self.cpu_share.check() if self.device.type == "cpu" and not self.world.active else None
            if busy:
                self._event("warning", kind="busy_machine", message=busy)
        every = self.cfg.eval.every
        evaluating = every > 0 and (self.step % every == 0 or self.step == total)
        saving = self.step % self.cfg.train.checkpoint_every == 0 and self.step < total
        if saving or evaluating or self.step == total:  # fit() saves the final step: check it too
            bad = self._nonfinite_state()  # finite losses can come with weights a last update broke
            if bad:
                self._on_nonfinite(bad)
                return
        if views:
            self._save_views(views)
        if evaluating and self.world.is_main:
            self.evaluate()
        if saving:
            self._save_or_warn()
        self._bar.update(1)

    def _stopping(self) -> bool:
        """A stop signal ends a one-process run after this step; several processes agree on one
        step first, at the next log step (_run_one_step)."""
        return self._stop_signal is not None and (not self.world.active or self._stop_agreed)

    def _check_processes_in_step(self) -> None:
        """Averaged gradients keep every process's networks identical; say so loudly if they are not."""
        if not self.world.active:
            return
        drift = max(distributed.max_difference(self.g, self.device), distributed.max_difference(self.d, self.device))
        if drift > 0:
            self._event("warning", kind="process_drift",
                        message=f"the processes' weights differ by up to {drift:.3g}; process 0's are saved")

    def _is_snapshot_step(self, step: int, total: int) -> bool:
        every = self.cfg.train.snapshot_every
        return every > 0 and (step == 1 or step % every == 0 or step == total)

    def _log(self, stats: dict[str, torch.Tensor]) -> dict[str, Any]:
        row: dict[str, Any] = {"step": self.step}
        row.update({k: round(float(v), 6) for k, v in stats.items()})
        if self.cfg.loss.instance_noise > 0:
            row["noise_std"] = self.loss.noise_std(self.step)
        row["seconds"] = round(self.elapsed, 3)
        postfix = {"D": f"{row['d_loss']:.3f}", "G": f"{row['g_loss']:.3f}"}
        if "d_real" in row:
            postfix.update({"D(x)": f"{row['d_real']:.2f}", "D(G(z))": f"{row['d_fake']:.2f}"})
        else:  # a critic's raw values (wgan-gp, hinge, lsgan): no probabilities
            postfix.update({"C(x)": f"{row['critic_real']:.2f}", "C(G(z))": f"{row['critic_fake']:.2f}"})
        if self.is_image:
            t = self.cfg.train
            seen = self.step * t.batch_size * (1 if t.reuse_batch else t.n_d)  # real images drawn so far
            row["epoch"] = round(seen / len(self.source), 4)
            row["images_per_s"] = round(seen / max(self.elapsed, 1e-9), 1)
            postfix = {"epoch": f"{row['epoch']:.2f}", **postfix, "img/s": f"{row['images_per_s']:.0f}"}
        self._append_metrics(row)
        self._bar.set_postfix(postfix, refresh=False)
        return row

    def _append_metrics(self, row: dict[str, Any]) -> None:
        if not self.world.is_main:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.row(row)

    def _event(self, event: str, **fields: Any) -> None:
        """A line in metrics.jsonl (the run's record) and on stderr."""
        self._append_metrics({"step": self.step, "event": event, **fields})
        if not self.world.is_main:
            return
        text = fields.get("message", "")
        tqdm.write(f"gankit: {event} at step {self.step}: {text}", file=sys.stderr)

    # ------------------------------------------------------------------ evaluation
    @property
    def rejection_critic(self) -> Critic | None:
        """The critic samples go through: the fitted one, unless it keeps too few (then G alone)."""
        return self.critic if self.critic is not None and self.critic.usable else None

    def eval_target(self) -> metrics_eval.EvalTarget:
        """What the metrics need: the data, samples of the sampling generator and, for vector data
        judged one point at a time, sigmoid D. The probability view compares D with D* for the
        generator D was trained against, so it gets the live G's samples when the sampler differs
        (an EMA copy of G, or the rejection critic on top)."""
        # D against D* needs D to judge one point at a time, as a probability (a cross-entropy loss)
        vector_d = not self.is_image and self.cfg.model.pack == 1 and self.loss.pair.probabilistic
        sampler_differs = self.ema is not None or self.rejection_critic is not None
        return metrics_eval.EvalTarget(self.source, self._eval_samples, self._d_prob if vector_d else None,
                                       self._live_samples if sampler_differs else None)

    @torch.no_grad()
    def _eval_samples(self, n: int, seed: int) -> np.ndarray:
        """n samples in the data's units (uint8 NHWC images), through the rejection critic if fitted."""
        if self.rejection_critic is not None:
            rng = torch.Generator().manual_seed(seed)
            labels = torch.arange(n) % self.num_classes if self.num_classes else None
            return self._to_data(rejection_sample(self.rejection_critic, self._draw_fake, n, rng, labels))
        return self._samples_of(self.sampler_g, n, seed)

    def _live_samples(self, n: int, seed: int) -> np.ndarray:
        return self._samples_of(self.g, n, seed)

    @torch.no_grad()
    def _samples_of(self, generator: nn.Module, n: int, seed: int) -> np.ndarray:
        """n samples of `generator` in the data's units, in eval mode, 1,000 at a time."""
        m, rng = self.cfg.model, torch.Generator().manual_seed(seed)
        z = sample_noise(n, m, rng).to(self.device)
        labels = (torch.arange(n) % self.num_classes).to(self.device) if self.num_classes else None
        with eval_mode(generator) as g:
            parts = [self._to_data(g(z[i:i + 1000], labels[i:i + 1000] if labels is not None else None))
                     for i in range(0, n, 1000)]
        return np.concatenate(parts)

    def _to_data(self, x: torch.Tensor) -> np.ndarray:
        return output_to_data(x, self.norm, self.cfg.model.g_output if self.is_image else None)

    @torch.no_grad()
    def _d_prob(self, x: np.ndarray) -> np.ndarray:
        """D's estimate of p_data / (p_data + p_g) at x. With one-sided label smoothing (real target
        t = 1 - a) D's optimum is t p_data / (p_data + p_g), so sigmoid D is divided by t."""
        with eval_mode(self.d) as d:
            logits = d(self.norm.to_model(torch.as_tensor(x, dtype=torch.float32, device=self.device)))
        target = 1.0 - self.cfg.loss.label_smoothing
        return (torch.sigmoid(logits).double() / target).clamp(max=1.0).cpu().numpy()

    def evaluate(self) -> dict[str, Any]:
        """Score the generator now; log the numbers to metrics.jsonl (rows with "eval": true) and,
        on 2-D data of known density, save the probability view (D, D*, densities) as a snapshot."""
        target, e = self.eval_target(), self.cfg.eval
        names = list(e.metrics) or metrics_eval.default_metrics(target)
        started = time.perf_counter()
        scores = metrics_eval.evaluate(target, names, e.n or None, seed=0)
        row = {"step": self.step, "eval": True, **({"drs": True} if self.rejection_critic is not None else {}),
               **{k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()},
               "eval_seconds": round(time.perf_counter() - started, 3)}
        self._append_metrics(row)
        if "probability" in names:
            self._save_probability_view(target)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if isinstance(v, (int, float)) and k != "n")
        tqdm.write(f"gankit: eval at step {self.step}: {shown}", file=sys.stderr)
        return row

    def _save_probability_view(self, target: metrics_eval.EvalTarget) -> None:
        from gankit.metrics.probability import GeneratedDensity, probability_grid

        fake = target.game_sample(self.cfg.eval.n or 2500, 0)
        real = self.fixed_real.numpy()
        points = np.concatenate([real, fake])
        low, high = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
        low, high = np.minimum(low, real.min(0)), np.maximum(high, real.max(0))
        pad = 0.1 * (high - low) + 1e-6
        density = GeneratedDensity(fake)
        log_p_data = metrics_eval.blurred_log_prob(self.source, density)
        grid = probability_grid(log_p_data, density, target.d_prob, low - pad, high + pad)
        folder = self.run_dir / "snapshots"
        folder.mkdir(exist_ok=True)
        np.savez_compressed(folder / f"prob-step-{self.step:06d}.npz", step=self.step, real=real,
                            fake=fake[:1000], **grid)

    # ------------------------------------------------------------------ guards
    def _on_nonfinite(self, bad: list[str]) -> None:
        """Roll back to the newest checkpoint with finite weights, with lower learning rates, or stop
        with a diagnosis."""
        t = self.cfg.train
        where = f"non-finite {', '.join(bad)} at step {self.step}"
        if t.on_nonfinite == "stop" or self._rollbacks >= t.nonfinite_retries:
            self._event("diverged", message=where)
            raise TrainingError(f"{where} (after {self._rollbacks} rollbacks); lower the learning rates "
                                "(--set optim_d.lr=... optim_g.lr=...), or try model.spectral_norm=true or "
                                f"loss.name=hinge; the checkpoints in {self.run_dir / 'checkpoints'} hold only "
                                "finite weights")
        rollbacks = self._rollbacks + 1
        self.load_state_dict(self._newest_finite_checkpoint(where))
        self._rollbacks, self._lr_scale = rollbacks, t.nonfinite_lr_factor ** rollbacks
        self._set_learning_rates(self.step)
        self._truncate_metrics()
        self._set_aside_later_checkpoints()  # any poisoned ones: a resume must not start from them
        self._event("rollback", message=f"{where}; back to step {self.step} with learning rates x{self._lr_scale:g}")
        self._bar.n = self.step
        self._bar.refresh()

    def _newest_finite_checkpoint(self, where: str) -> dict[str, Any]:
        """The newest readable checkpoint whose weights and optimiser states are all finite (runs saved
        by older gankit versions may hold a poisoned one)."""
        for file in reversed(ckpt.step_files(self.run_dir / "checkpoints")):
            try:
                state = ckpt.load_checkpoint(file, map_location=self.device)
            except UserError:
                continue  # damaged: try the one before
            if not nonfinite_parts(state):
                return state
        raise TrainingError(f"{where}, and no checkpoint of {self.run_dir} holds finite weights to roll back to; "
                            "start again with lower learning rates")

    def _nonfinite_state(self) -> list[str]:
        """What of the training state (networks, EMA, optimisers) holds a NaN or an infinity."""
        return nonfinite_parts({"g": self.g.state_dict(), "d": self.d.state_dict(),
                                "ema": self.ema.state_dict() if self.ema is not None else None,
            "sampler_buffers": self._sampler_buffers(),
                                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()})

    def _save_or_warn(self, gather: bool = True) -> Path | None:
        """Save a checkpoint; if the disk refuses, say so and keep the previous one. In a multi-process
        run every process sends its random state (gather) and process 0 writes. The state is checked
        finite by the callers (_run_one_step, _save_final), once, before they save."""
        if self.world.active and gather:
            self._rng_ranks = distributed.gather_to_main(capture_rng(self.data_rng, self.noise_rng))
        if not self.world.is_main:
            return self.run_dir / "checkpoints" / "latest.pt"
        try:
            return self.save()
        except OSError as exc:
            self._event("checkpoint_failed", message=f"could not write the checkpoint ({exc.strerror or exc}); "
                                                     "the previous checkpoint is intact")
            return None

    def _save_views(self, views: dict[str, np.ndarray]) -> None:
        folder = self.run_dir / "snapshots"
        folder.mkdir(exist_ok=True)
        real = to_uint8(self.fixed_real, self.cfg.model.g_output) if self.is_image else self.fixed_real.numpy()
        extra = {"labels": self.fixed_labels.cpu().numpy()} if self.fixed_labels is not None else {}
        np.savez_compressed(folder / f"step-{self.step:06d}.npz", step=self.step, real=real, **views, **extra)
        if self.tensorboard is not None and "images" in views:
            self.tensorboard.images(self.step, views["images"])

    def _prepare_run_dir(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if not is_run(self.run_dir):
            mark_run(self.run_dir, "Trainer")
        atomic_write_text(self.run_dir / "config.toml", config_mod.dumps(self.cfg))
        for stale in [*self.run_dir.glob(".*.tmp"), *(self.run_dir / "checkpoints").glob(".*.tmp")]:
            stale.unlink()  # left by a write that a crash cut short; the complete files are untouched
        self._truncate_metrics()
        moved = self._set_aside_later_checkpoints()
        if moved:
            self._event("resumed_earlier", message=f"training continues from step {self.step}; the {moved} "
                                                   "later checkpoint(s) moved to checkpoints/abandoned/")

    def _set_aside_later_checkpoints(self) -> int:
        """Training continues from an earlier checkpoint (a resume from step-N.pt when latest.pt is
        damaged, or a rollback): the checkpoints after it belong to a continuation no longer followed.
        They move to checkpoints/abandoned/ (kept, not deleted) and latest.pt names the step continued
        from. Returns how many moved."""
        if not self.world.is_main:
            return 0
        folder = self.run_dir / "checkpoints"
        later = [f for f in ckpt.step_files(folder) if ckpt.step_of(f) > self.step]
        if later:
            (folder / "abandoned").mkdir(exist_ok=True)
            for file in later:
                file.replace(folder / "abandoned" / file.name)
            current = folder / f"step-{self.step:06d}.pt"
            if current.is_file():
                ckpt.point_latest(folder, current)
        return len(later)

    def _truncate_metrics(self) -> None:
        """On resume, drop log lines written after the checkpoint: no duplicates, no gaps."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists() or not self.world.is_main:
            return
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and _line_step(line) <= self.step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))

    # ------------------------------------------------------------------ interruption
    @contextmanager
    def _handle_stop_signals(self) -> Iterator[None]:
        """Ctrl-C / SIGTERM: finish the step, checkpoint, then exit with the usual status."""
        def remember(signum, _frame):
            self._stop_signal = signum

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, remember)
            except ValueError:  # not the main thread: leave signals alone
                pass
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _exit_on_signal(self) -> None:
        name = signal.Signals(self._stop_signal).name
        if self.world.is_main:
            print(f"\ngankit: {name} received; checkpoint saved at step {self.step}. "
                  f"Continue with: gankit resume {self.run_dir}", file=sys.stderr)
        raise SystemExit(128 + int(self._stop_signal))

    # ------------------------------------------------------------------ state
    def save(self) -> Path:
        return ckpt.save_checkpoint(self.state_dict(), self.run_dir / "checkpoints", self.step,
                                    self.cfg.train.keep_checkpoints)

    def state_dict(self) -> dict[str, Any]:
        return {
            "gankit_version": gankit.__version__,
            "config": config_mod.dumps(self.cfg),
            "step": self.step,
            "elapsed": self.elapsed,
            "data_shape": list(self.source.shape),
            "num_classes": self.num_classes,
            "g": self.g.state_dict(),
            "d": self.d.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "sampler_buffers": self._sampler_buffers(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "norm": self.norm.state_dict(),
            "rng": capture_rng(self.data_rng, self.noise_rng),
            "rng_ranks": self._rng_ranks_now(),
            "critic": self.critic.state_dict() if self.critic is not None else None,
            "guard": {"rollbacks": self._rollbacks, "lr_scale": self._lr_scale, "schedule_steps": self.schedule_steps},
        }

    def _sampler_buffers(self) -> dict[str, torch.Tensor] | None:
        """The EMA G's measured batch-norm statistics, so `gankit sample` need not measure them again."""
        if self.ema is None or not has_batch_norm(self.g):
            return None
        return {name: b.detach().clone() for name, b in self.sampler_g.named_buffers()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"])
            self._sampler_copy = None
        load_optimizer_state(self.opt_g, state["opt_g"])
        load_optimizer_state(self.opt_d, state["opt_d"])
        self.norm = Normalizer(state["norm"]["mean"], state["norm"]["std"])
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        guard = state.get("guard") or {}  # runs saved before it was kept: no rollbacks, the saved length
        self._rollbacks, self._lr_scale = int(guard.get("rollbacks", 0)), float(guard.get("lr_scale", 1.0))
        self.schedule_steps = int(guard.get("schedule_steps", self.schedule_steps))
        self._restore_rng(state)
        if state.get("critic") is not None:
            try:
                self.critic = Critic.from_state(state["critic"], self.cfg, self.source.shape, self.num_classes)
                self.critic.net.to(self.device)
            except UserError:
                self.critic = None  # an old critic that no longer loads: fit() fits a new one at the end

    def _rng_ranks_now(self) -> list[dict[str, Any]] | None:
        """Every process's random state for a multi-process run (process 0's as it is now)."""
        if not self.world.active or self._rng_ranks is None:
            return None
        return [capture_rng(self.data_rng, self.noise_rng), *self._rng_ranks[1:]]

    def _restore_rng(self, state: dict[str, Any]) -> None:
        """Each process continues its own streams when the run is resumed on as many processes as
        saved it; on another number they start afresh from (seed, step, rank), which is said."""
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == self.world.size:
            restore_rng(ranks[self.world.rank], self.data_rng, self.noise_rng)
            return
        seed = self.cfg.train.seed + RANK_SEED_STRIDE * self.world.rank + 1_000_003 * int(state["step"])
        self.data_rng.manual_seed(seed + 1)
        self.noise_rng.manual_seed(seed + 2)
        self._resume_note = (f"saved by {len(ranks)} process(es), resumed on {self.world.size}: the data and noise "
                             "streams start afresh, so the run is not bit-identical to an uninterrupted one")

    @classmethod
    def resume(cls, path: str | Path, settings: list[str] | tuple[str, ...] = ()) -> "Trainer":
        """The trainer of an existing run (a run directory or one of its checkpoint files) at that
        checkpoint; `settings` (key=value) may change the config, e.g. where the data lives."""
        file = ckpt.find_checkpoint(path)
        state = ckpt.load_checkpoint(file)
        try:
            cfg = config_mod.loads(state["config"], source=f"the config inside {file}")
            cfg = config_mod.with_overrides(cfg, list(settings))
            trainer = cls(cfg, ckpt.run_dir_of(path))
            trainer.load_state_dict(state)
        except ckpt.STATE_ERRORS as exc:
            raise ckpt.incompatible(file, exc) from exc
        return trainer


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return sys.maxsize  # an unreadable (half-written) line is dropped
