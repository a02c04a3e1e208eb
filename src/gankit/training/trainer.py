"""The training loop: alternate D and G updates at every step, and call the run's other pieces at
the steps they are due. No GAN maths here (losses.py), and no bookkeeping either:

- runlog.RunLog: metrics.jsonl, the progress bar, events on stderr, TensorBoard;
- snapshots.Snapshots: the arrays behind the pictures;
- evaluation.Evaluation: scores during and after training;
- store.RunStore: the run folder, checkpoints, the state a resume continues from exactly;
- guards.Guards: rollback on a NaN, stop signals, processes kept in step.

One *step* is `n_d` discriminator updates followed by `n_g` generator updates (train.schedule says
how they share G's forward pass); the run's first loss.info_real_first steps, where set, are one D
update on Q's sorting of real images each. Everything the run needs to continue exactly (weights,
optimisers, EMA, step, every random state) is in `state_dict()`, which checkpoints hold.
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from gankit import config as config_mod
from gankit.config import RunConfig
from gankit.data import Source, make_source
from gankit.errors import UserError
from gankit.losses import GANLoss
from gankit.metrics import evaluate as metrics_eval
from gankit.models import MODELS
from gankit.models.base import has_batch_norm
from gankit.models.noise import groups_of, sample_noise
from gankit.rundir import hold_run
from gankit.training import checkpoint as ckpt
from gankit.training import distributed, tensorboard
from gankit.training.cpu import default_threads, torch_cpu_settings
from gankit.training.evaluation import Evaluation
from gankit.training.guards import Guards
from gankit.training.health import CpuShare, HealthMonitor, batch_diversity, nonfinite
from gankit.training.precision import SAVED_BEFORE_RECORDING, Precision, PrecisionChoice, resolve_precision
from gankit.training.optim import make_optimizer
from gankit.training.rejection import Critic, fit_run_critic, generator_draw
from gankit.training.runlog import RunLog
from gankit.training.snapshots import Snapshots
from gankit.training.state import Normalizer, measure_batch_norm
from gankit.training.store import RANK_SEED_STRIDE, RunStore


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


def per_process_batch(batch_size: int, processes: int) -> int:
    """train.batch_size is the batch of one step over all processes; each draws an equal share."""
    if batch_size % processes:
        raise UserError(f"train.batch_size = {batch_size} does not split over {processes} processes; "
                        f"give a multiple of {processes}")
    return batch_size // processes


def make_normalizer(cfg: RunConfig, source: Source) -> Normalizer:
    """Vectors: standardised if asked. Images: scaled to G's output range by the source itself."""
    if source.kind == "image":
        if cfg.model.g_output not in ("tanh", "sigmoid"):
            raise UserError(f"image data needs model.g_output = 'tanh' (pixels in [-1, 1]) or 'sigmoid' "
                            f"([0, 1]), not '{cfg.model.g_output}'")
        source.output = cfg.model.g_output
        return Normalizer.identity(1)
    if cfg.model.conditional:
        raise UserError(f"model.conditional = true needs labelled data; '{cfg.data.name}' has no labels")
    for key, verb in (("translate", "shifts"), ("info_warp", "warps")):  # the loss's image-only terms
        if getattr(cfg.loss, key) > 0:
            raise UserError(f"loss.{key} {verb} images; '{cfg.data.name}' holds vectors: set loss.{key} = 0")
    return Normalizer(*source.moments()) if cfg.data.normalize else Normalizer.identity(source.dim)


def check_penalties_fit_d(loss: GANLoss, d: nn.Module) -> None:
    """WGAN-GP and R1 penalise each sample's input gradient; batch norm in D mixes the samples of a
    batch into every output, so those gradients (and the penalties) would be wrong."""
    c = loss.cfg
    penalty = ("loss.name = 'wgan-gp'" if loss.pair.gradient_penalty and c.gp_weight > 0 else
               "loss.r1_gamma" if c.r1_gamma > 0 else None)
    if penalty and has_batch_norm(d):
        raise UserError(f"{penalty} penalises per-sample gradients, which batch norm in D couples across the "
                        "batch; 28x28 dcgan: set model.d_batch_norm=false; 32/64-pixel dcgan: set "
                        "model.spectral_norm=true (it replaces D's batch norm)")


def build_networks(cfg: RunConfig, shape: tuple[int, ...], num_classes: int) -> tuple[nn.Module, nn.Module]:
    """G and D as a run of `cfg` builds them for data of `shape` (the code head included), on the
    CPU, initialised from torch's global random stream: the trainer, and whoever rebuilds a saved
    run's networks to load its weights into (the report, benchmarks)."""
    g, d = MODELS.get(cfg.model.name)(cfg.model, tuple(shape), num_classes)
    add_code_head(d, cfg)
    return g, d


def add_code_head(d: nn.Module, cfg: RunConfig) -> None:
    """InfoGAN's Q head on D (loss.info_weight > 0), before the optimiser collects D's weights."""
    if cfg.loss.info_weight == 0:
        return
    if not hasattr(d, "logit"):
        raise UserError("loss.info_weight needs one of gankit's discriminators (its features feed the code head); "
                        "set loss.info_weight = 0 for networks passed from Python")
    d.add_code_head(cfg.model.z_categories, cfg.model.code_hidden)


def make_ema(g: nn.Module, decay: float, step_now) -> AveragedModel | None:
    """An exponential moving average of G's weights (and buffers) for sampling. Its decay ramps
    up as min(decay, (1 + t) / (10 + t)) after t steps (TensorFlow's ExponentialMovingAverage
    with num_updates): a constant 0.999 would leave a 300-step run's average 74% its initial
    random weights. It depends on the step alone (step_now()), so a resumed run averages exactly as before."""
    if decay <= 0:
        return None

    def average(ema_params: list[torch.Tensor], params: list[torch.Tensor], _count: torch.Tensor) -> None:
        step = step_now()
        now = min(decay, (1 + step) / (10 + step))
        if ema_params[0].is_floating_point():  # AveragedModel passes one dtype at a time
            torch._foreach_lerp_(ema_params, params, 1.0 - now)  # as get_ema_multi_avg_fn does
        else:  # integer buffers (batch norm's num_batches_tracked), as get_ema_multi_avg_fn does
            for ema, param in zip(ema_params, params):
                ema.copy_(ema * now + param * (1 - now))

    return AveragedModel(g, multi_avg_fn=average, use_buffers=True)


def diversity_groups(m: config_mod.ModelConfig, z: torch.Tensor, labels: torch.Tensor | None,
                     num_classes: int, is_image: bool) -> torch.Tensor | None:
    """The groups (categories or classes, noise.groups_of) for the logged diversity within groups.
    None (no diversity_within) for vector data, where a category is meant to shrink onto one tight
    mode (ring8), and for batches no larger than the number of groups: only a larger one is sure to
    hold a group of two, so the value is never NaN (which the non-finite guard would take for a
    diverging run)."""
    groups = m.z_categories or num_classes
    if not is_image or not groups or len(z) <= groups:
        return None
    return groups_of(z, m.z_dim, labels)


def make_precision(run: "Trainer", saved: dict[str, str] | None) -> tuple[Precision, PrecisionChoice]:
    """The run's arithmetic: train.precision, auto resolved (`saved`: the choice in the checkpoint
    it resumes from). Every process computes with process 0's choice, whatever its own probe timed."""
    choice = resolve_precision(run.cfg.train.precision, run.device, run.is_image, run.threads, saved)
    if run.world.active:
        choice = PrecisionChoice(*distributed.from_main(tuple(choice)))
    uses_adam = "adam" in (run.cfg.optim_g.name, run.cfg.optim_d.name)  # the kernel is Adam's step
    precision = Precision(choice.name, run.device, run.is_image, [run.g, run.d], processes=run.world.size,
                          adam_kernel=run.cfg.train.adam_kernel if uses_adam else "torch",
                          optimizers=(run.opt_g, run.opt_d))
    return precision, choice


def learning_rate_factor(t, step: int, schedule_steps: int) -> float:
    """train.lr_schedule's factor at this step. The schedule spans the steps the run was started
    with (schedule_steps, kept in checkpoints): a resume to a larger total continues at the
    schedule's final rate instead of stretching it. The last step runs at lr_final."""
    progress = min(step / max(schedule_steps - 1, 1), 1.0)
    if t.lr_schedule == "linear":
        return 1.0 - (1.0 - t.lr_final) * progress
    if t.lr_schedule == "cosine":
        return t.lr_final + (1.0 - t.lr_final) * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


def sorting_steps(run: "Trainer") -> int:
    """The run's first steps, in which D learns Q's sorting of real images alone (loss.info_real_first;
    at most half the run's first train.steps, kept across resumes as the schedule's length is)."""
    return min(run.cfg.loss.info_real_first, run.schedule_steps // 2)


def sorting_step(run: "Trainer", snapshot: bool, log: bool) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
    """One of the run's first steps (loss.info_real_first): D's update on Q's sorting of a real batch
    and a warped copy alone, weighted by loss.info_real as in the GAN's steps (there Q's first copy is
    D's pass over the batch as D judges it, after loss.translate and instance noise where set; here
    the batch as drawn). G, and so its EMA, wait."""
    real, labels = run.draw_real()
    with run.precision.during_step():
        with run.precision.autocast():
            clustering = run.loss.sorting_loss(run.d, real, run.noise_rng, labels)
        run._update(run.d_params, run.opt_d, run.cfg.loss.info_real * clustering)
    views = {"images": run.snapshots.images(run.snapshots.z, run.snapshots.labels)} if snapshot else {}
    return ({"info_real": -clustering.detach()} if log else {}), views


class Trainer:
    """Owns the networks, optimisers and random states of one run, and runs its loop."""

    def __init__(self, cfg: RunConfig, run_dir: str | Path, source: Source | None = None, *,
                 saved_precision: dict[str, str] | None = None):  # auto's choice in the checkpoint (resume)
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.world = distributed.world()
        self.batch_size = per_process_batch(cfg.train.batch_size, self.world.size)
        self.device = resolve_device(cfg.train.device)
        self.source = source if source is not None else make_source(cfg.data)
        self.is_image = self.source.kind == "image"
        self.norm = make_normalizer(cfg, self.source)
        self.num_classes = self.source.num_classes if cfg.model.conditional else 0
        torch.manual_seed(cfg.train.seed)  # weight initialisation
        g, d = build_networks(cfg, self.source.shape, self.num_classes)  # the code head before the move to the device
        # channels-last convolutions: oneDNN's (and cuDNN's) fastest layout, above all in bfloat16
        self.memory_format = torch.channels_last if self.is_image and cfg.model.name == "dcgan" else torch.contiguous_format
        self.g = g.to(self.device, memory_format=self.memory_format)
        self.d = d.to(self.device, memory_format=self.memory_format)
        self.loss = GANLoss(cfg.loss, cfg.model.z_dim, cfg.model.z_std)
        check_penalties_fit_d(self.loss, self.d)
        if cfg.train.tensorboard:
            tensorboard.check_available()  # refused before the run folder is touched
        self.ema = make_ema(self.g, cfg.train.ema_decay, lambda: self.step)
        # the weights each update steps (backward(inputs=...) refuses frozen ones)
        self.g_params = [p for p in self.g.parameters() if p.requires_grad]
        self.d_params = [p for p in self.d.parameters() if p.requires_grad]
        self.opt_g = make_optimizer(self.g_params, cfg.optim_g)
        self.opt_d = make_optimizer(self.d_params, cfg.optim_d)
        self.schedule = update_schedule(cfg.train)
        self.threads = cfg.train.threads or default_threads(self.is_image)
        self.precision, self.precision_choice = make_precision(self, saved_precision)
        rank_seed = cfg.train.seed + RANK_SEED_STRIDE * self.world.rank  # the same weights, other batches
        if self.world.active:
            torch.manual_seed(rank_seed)  # dropout masks differ between processes too
        self.data_rng = torch.Generator().manual_seed(rank_seed + 1)
        self.noise_rng = torch.Generator(self.device).manual_seed(rank_seed + 2)
        self.step, self.elapsed = 0, 0.0
        self._rollbacks, self._lr_scale = 0, 1.0  # divergence guard: rollbacks so far, their rate factor
        self.schedule_steps = cfg.train.steps  # the learning-rate schedule's length; a longer resume holds its end
        self._sampler_copy: nn.Module | None = None  # the EMA G with measured batch norm, until the EMA moves
        self.critic: Critic | None = None  # rejection sampling, fitted after training
        self.health = HealthMonitor()
        self.log, self.store, self.guards = RunLog(self), RunStore(self), Guards(self)
        self.snapshots, self.evaluation = Snapshots(self), Evaluation(self)

    @property
    def sampler_g(self) -> nn.Module:
        """G to sample from: the EMA copy when there is one, its batch-norm statistics measured again each time it moves."""
        if self.ema is None:
            return self.g
        if self._sampler_copy is None:
            self._sampler_copy = measure_batch_norm(self.ema.module, self.cfg.model, self.num_classes)
        return self._sampler_copy

    # ------------------------------------------------------------------ one step
    def draw_real(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self._draw_real_with(self.batch_size, self.data_rng)

    def draw_noise(self) -> torch.Tensor:
        return sample_noise(self.batch_size, self.cfg.model, self.noise_rng, self.device)

    def _draw_real_with(self, n: int, rng: torch.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, labels = self.source.sample_labeled(n, rng)
        batch = batch.to(self.device, non_blocking=True)
        batch = batch.contiguous(memory_format=self.memory_format) if self.is_image else self.norm.to_model(batch)
        return batch, (labels.to(self.device, non_blocking=True) if labels is not None and self.num_classes else None)

    @property
    def draw_fake(self):
        return generator_draw(self.sampler_g, self.cfg, self.num_classes, self.device)

    def _gradients(self, params: list[nn.Parameter], opt: torch.optim.Optimizer, loss: torch.Tensor,
                   retain_graph: bool = False) -> None:
        """The gradient of `loss` for these weights only: G's update computes no gradient for D's
        weights (autograd skips that work), nor D's for G's. Averaged over processes when several."""
        opt.zero_grad(set_to_none=True)
        self.precision.scaled(loss, opt).backward(inputs=params, retain_graph=retain_graph)
        if not retain_graph:  # a retained graph still holds the bfloat16 weights: the caller switches back
            self.precision.use_full(params)
        if self.world.active:
            distributed.average_gradients(params, self.world.size)

    def _update(self, params: list[nn.Parameter], opt: torch.optim.Optimizer, loss: torch.Tensor) -> None:
        self._gradients(params, opt, loss)
        self.precision.step(opt, params)

    def generate(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The batch D is trained on: without a graph, unless the first G update reuses it (shared)."""
        with self.precision.autocast(), torch.set_grad_enabled(self.schedule == "shared"):
            return self.g(z, labels)

    def train_step(self, snapshot: bool = False, log: bool = True) -> tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]:
        """One step of the update schedule (train.schedule). Generated batches use the real batch's
        labels. Returns the stats to log (when `log`) and, if asked, the snapshot arrays."""
        if self.step < sorting_steps(self):
            return sorting_step(self, snapshot, log)
        views: dict[str, np.ndarray] = {}
        (real, labels), z = self.draw_real(), self.draw_noise()
        article_views = snapshot and not self.is_image
        if article_views:
            views.update(self.snapshots.views("d0", "g0"))
        # D moved, G not yet
        between = (lambda: views.update(self.snapshots.views("d1", "g0"))) if article_views else None
        with self.precision.during_step():
            if self.schedule == "simultaneous":
                d_loss, g_loss, stats, real, fake = self._simultaneous_update(real, labels, z, between)
            else:
                d_loss, stats, real, fake, labels, z = self._d_updates(real, labels, z)
                if between is not None:
                    between()
                g_loss = self._g_updates(fake, z, labels)
        if self.ema is not None:
            self.ema.update_parameters(self.g)
            self._sampler_copy = None  # measured for the EMA weights before this update
        if article_views:
            views.update(self.snapshots.views("d1", "g1", with_grid=True))
        elif snapshot:
            views["images"] = self.snapshots.images(self.snapshots.z, self.snapshots.labels)
        if not log:
            return {}, views
        groups = diversity_groups(self.cfg.model, z, labels, self.num_classes, self.is_image)
        diversity = batch_diversity(fake, real, groups)
        return {"d_loss": d_loss.detach(), "g_loss": g_loss.detach(), **stats, **diversity}, views

    def _d_updates(self, real, labels, z):
        """train.n_d D updates on generated batches (a new real and generated batch for each unless
        train.reuse_batch). Returns the last loss and stats, and the last batches and noise."""
        t = self.cfg.train
        fake = self.generate(z, labels)
        for i in range(t.n_d):
            if i > 0 and not t.reuse_batch:
                (real, labels), z = self.draw_real(), self.draw_noise()
                fake = self.generate(z, labels)
            with self.precision.autocast():
                d_loss, stats = self.loss.d_loss(self.d, real, fake, self.step, self.noise_rng, labels, z=z)
            self._update(self.d_params, self.opt_d, d_loss)
        return d_loss, stats, real, fake, labels, z  # z made fake: G's InfoGAN term reads its categories

    def _g_updates(self, fake, z, labels) -> torch.Tensor:
        """train.n_g G updates through the updated D; the first reuses D's batch when shared (G has not
        changed since it made it), the others draw new noise unless train.reuse_batch."""
        t = self.cfg.train
        for i in range(t.n_g):
            shared = fake if self.schedule == "shared" and i == 0 else None
            if shared is None and not t.reuse_batch:
                z = self.draw_noise()
            with self.precision.autocast():
                g_loss = self.loss.g_loss(self.g, self.d, z, self.step, self.noise_rng, labels, fake=shared)
            self._update(self.g_params, self.opt_g, g_loss)
        return g_loss

    def _simultaneous_update(self, real, labels, z, between):
        """One G forward and one D pass over the real and the generated batch give both losses; D and G
        each step on the gradient for their own weights (two backward passes through D's graph)."""
        with self.precision.autocast():
            fake = self.g(z, labels)
            d_loss, g_loss, stats = self.loss.d_and_g_loss(self.d, real, fake, self.step, self.noise_rng, labels, z=z)
        self._gradients(self.d_params, self.opt_d, d_loss, retain_graph=True)  # G's loss still needs D's graph
        self._gradients(self.g_params, self.opt_g, g_loss)  # both before either step: D's weights are in the graph
        self.precision.use_full(self.d_params)
        self.precision.step(self.opt_d, self.d_params)
        if between is not None:
            between()
        self.precision.step(self.opt_g, self.g_params)
        return d_loss, g_loss, stats, real, fake

    # ------------------------------------------------------------------ the loop
    def fit(self, steps: int | None = None, progress: bool = True) -> "Trainer":
        """Train until `steps` (default: train.steps) steps are done; resumable at any checkpoint."""
        total = steps or self.cfg.train.steps
        cpu = torch_cpu_settings(self.threads, self.cfg.train.flush_denormals, self.device.type)
        with cpu as self.denormals_flushed, self._holding_run():
            self.log.open(total, progress)
            try:
                self._loop(total, progress)
            finally:
                self.log.close()
        if self.guards.stop_signal is not None:
            self.guards.exit_on_signal()
        return self

    @contextmanager
    def _holding_run(self) -> Iterator[None]:
        """Process 0 holds the run folder (one writer) and makes it ready; the others only train."""
        if not self.world.is_main:
            yield
            return
        with hold_run(self.run_dir):
            self.store.prepare_run_dir()
            yield

    def _loop(self, total: int, progress: bool) -> None:
        if self.step == 0:
            self.store.save_or_warn()  # a point to resume or roll back to from the very start
        self._started = time.perf_counter() - self.elapsed
        self.cpu_share = CpuShare(self.threads)  # measured from here: set-up and loading are no training
        self.guards.warn_before_training()
        if self.step < total:
            self.critic = None  # G is about to change: a critic of the old G would be wrong
        self.guards.check_time_budget()  # a resumed run may have none left
        with self.guards.stop_signals():
            while self.step < total and not self.guards.stopping() and not self.guards.time_up:
                self._run_one_step(total)
            self.log.close_bar()
            if self.step < total and not self.guards.stopping() and self.guards.time_up:
                self.log.time_budget_reached(total)
            self.guards.check_processes_in_step()
            self.store.save_final()
            wanted = self.cfg.train.drs_steps and self.critic is None and self.world.is_main
            if self.guards.stop_signal is None and wanted and self.fit_rejection_critic(progress) is not None:
                self.store.save_final(gather=False)  # process 0 alone: the others have finished

    def _run_one_step(self, total: int) -> None:
        if self.cfg.train.lr_schedule != "constant" or self._lr_scale != 1.0:
            self.set_learning_rates(self.step)
        logging = (self.step + 1) % self.cfg.train.log_every == 0 or self.step + 1 == total
        # the time budget is checked as a log step begins, so the last step is logged like any run's last
        last = self.step + 1 == total or (logging and self.guards.check_time_budget())
        snap = self.world.is_main and self.snapshots.due(self.step + 1, self.step + 1 if last else total)
        self.cpu_share.begin()
        stats, views = self.train_step(snapshot=snap, log=logging)
        self.cpu_share.end()
        self.step += 1
        self.elapsed = time.perf_counter() - self._started
        if logging and not self._log_step(stats):
            return  # rolled back
        every = self.cfg.eval.every
        evaluating = every > 0 and (self.step % every == 0 or last)
        saving = self.step % self.cfg.train.checkpoint_every == 0 and not last
        if saving or evaluating or last:  # fit() saves the final step: check it too
            bad = self.guards.nonfinite_state()  # finite losses can come with weights a last update broke
            if bad:
                self.guards.on_nonfinite(bad)
                return
        if views:
            self.snapshots.save(views)
        if evaluating and self.world.is_main:
            self.evaluation.evaluate()
        if saving:
            self.store.save_or_warn()
        self.log.advance()

    def _log_step(self, stats: dict[str, torch.Tensor]) -> bool:
        """Log the step and check its health; False when a NaN or infinity rolled the run back."""
        if self.world.active:  # the processes meet here, not every step: no host sync in between
            stats = distributed.mean_over_processes(stats)
            self.guards.agree_on_stop()
        row = self.log.training_row(stats)
        bad = nonfinite(row)
        if bad:
            self.guards.on_nonfinite(bad)
            return False
        self.guards.warn_of_health(row)
        return True

    def set_learning_rates(self, step: int) -> None:
        """Base rate x schedule factor at this step x the rollback scale."""
        factor = learning_rate_factor(self.cfg.train, step, self.schedule_steps)
        for opt, section in ((self.opt_g, self.cfg.optim_g), (self.opt_d, self.cfg.optim_d)):
            for group in opt.param_groups:
                group["lr"] = section.lr * factor * self._lr_scale

    def fit_rejection_critic(self, progress: bool = True) -> Critic | None:
        """Fit the density-ratio critic of the finished G (rejection.fit_run_critic)."""
        self.critic = fit_run_critic(self, progress)
        return self.critic

    # ------------------------------------------------------------------ for callers (CLI, API, tests)
    @property
    def rejection_critic(self) -> Critic | None:
        """The critic samples go through: the fitted one, unless it keeps too few (then G alone)."""
        return self.critic if self.critic is not None and self.critic.usable else None

    def eval_target(self, truncation: float = 1.0) -> metrics_eval.EvalTarget:
        return self.evaluation.target(truncation)

    def evaluate(self) -> dict[str, Any]:
        return self.evaluation.evaluate()

    def state_dict(self) -> dict[str, Any]:
        return self.store.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.store.load_state_dict(state)

    @classmethod
    def resume(cls, path: str | Path, settings: list[str] | tuple[str, ...] = ()) -> "Trainer":
        """The trainer of an existing run (a run directory or one of its checkpoint files) at that
        checkpoint; `settings` (key=value) may change the config, e.g. where the data lives."""
        file = ckpt.find_checkpoint(path)
        state = ckpt.load_checkpoint(file)
        try:
            cfg = config_mod.loads(state["config"], source=f"the config inside {file}")
            cfg = config_mod.with_overrides(cfg, list(settings))
            trainer = cls(cfg, ckpt.run_dir_of(path), saved_precision=state.get("precision", SAVED_BEFORE_RECORDING))
            trainer.load_state_dict(state)
        except ckpt.STATE_ERRORS as exc:
            raise ckpt.incompatible(file, exc) from exc
        return trainer
