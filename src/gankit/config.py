"""The typed run config: frozen dataclasses, loaded from TOML, overridden by `--set key=value`.

Every value is checked when the config is built, and an error names the key, the bad value and
what would be valid. A resolved config dumps back to TOML that re-runs the same experiment.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

from gankit.errors import ConfigError
from gankit.registry import did_you_mean

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

Activation = Literal["relu", "leaky_relu", "tanh", "elu", "gelu", "silu", "sigmoid"]
OutputActivation = Literal["none", "tanh", "sigmoid"]


@dataclass(frozen=True)
class DataConfig:
    name: str = "quadratic"  # a registered dataset, or points:PATH
    normalize: bool = True  # standardise each coordinate; samples come back in the data's units
    root: str = ""  # folder for datasets read from files
    split: Literal["train", "test", "all"] = "train"  # for mnist, fashion-mnist, cifar10
    download: bool = False  # fetch the official files (checked by MD5) when they are missing
    image_size: int = 64  # folder:PATH images are centre-cropped and resized to this
    channels: int = 3  # folder:PATH images: 1 (grey) or 3 (RGB)


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    z_dim: int = 2
    noise: Literal["uniform", "normal"] = "uniform"  # U(-1, 1) or N(0, 1)
    # the continuous noise's spread: the half-width of uniform noise, U(-z_std, z_std), or the
    # standard deviation of normal noise, N(0, z_std^2). Below 1 beside a one-hot
    # category (ClusterGAN, Mukherjee et al. 2019: 0.1), the categories' regions of G's input lie
    # far apart for their size
    z_std: float = 1.0
    # a latent with discrete structure: a uniform category of this many, one-hot after the z_dim
    # continuous coordinates (0: none); lets G put separated modes apart with nothing between them
    z_categories: int = 0
    # InfoGAN's Q head (loss.info_weight): a hidden layer of this width (LeakyReLU) between D's
    # features and the category logits, as in Chen et al. 2016 (0: one linear layer)
    code_hidden: int = 0
    # the category also picks the scale and shift of G's batch norms (as a class label does in a
    # conditional G), beside its one-hot at G's input (dcgan only)
    code_batch_norm: bool = False
    # false (with code_batch_norm = true): the category picks only the shift of G's batch norms; no
    # scale is learnt
    code_batch_norm_scale: bool = True
    g_hidden: tuple[int, ...] = (16, 16)
    g_activation: Activation = "leaky_relu"
    g_output: OutputActivation = "none"
    g_batch_norm: bool = False  # mlp: batch norm after each hidden layer of G but the first
    d_batch_norm: bool = False  # 28x28 dcgan: batch norm after D's second convolution
    d_hidden: tuple[int, ...] = (16, 16)
    d_activation: Activation = "leaky_relu"
    d_feature_dim: int = 2  # a linear feature layer before the logit (0: none)
    d_dropout: float = 0.0  # dropout after each hidden layer of D (mlp, 28x28 dcgan)
    leaky_slope: float = 0.2
    init: Literal["default", "xavier_uniform", "normal"] = "default"
    init_std: float = 0.02  # for init = "normal"
    spectral_norm: bool = False  # on every linear and convolutional layer of D (not a class embedding)
    pack: int = 1  # PacGAN: D judges `pack` samples at once
    conditional: bool = False  # class-conditional G (label embedding) and projection D
    conv_width: int = 64  # dcgan: channels of the widest-resolution layer
    d_conv_width: int = 0  # dcgan: D's own conv_width (0: the same as G's)


@dataclass(frozen=True)
class LossConfig:
    name: str = "ns"  # ns, minimax, lsgan, wgan-gp, hinge
    gp_weight: float = 10.0  # gradient penalty weight for wgan-gp
    r1_gamma: float = 0.0  # R1 penalty gamma/2 * E|grad D(x)|^2 on real data (0: off)
    r1_every: int = 1  # apply R1 on every this-many-th step only, its weight multiplied as much (lazy R1)
    # InfoGAN: weight of a cross-entropy term by which a head on D's features must tell G's category
    # (model.z_categories) from the sample alone; G is trained to make it tellable (0: off)
    info_weight: float = 0.0
    # the InfoGAN term (with Q's warped pass, loss.info_warp) on every this-many-th step only (1: every
    # step); the steps between compute neither, so they cost what steps without the term cost
    info_every: int = 1
    # mode seeking (Mao et al. 2019): weight of a G term, the inverse of image distance per latent
    # distance over pairs of one category (model.z_categories) or class; against G making one image
    # per category whatever its noise (0: off; 1 in the article)
    mode_seeking: float = 0.0
    mode_seeking_anneal: int = 0  # steps over which that weight falls linearly to 0 (0: constant)
    label_smoothing: float = 0.0  # one-sided: real target = 1 - label_smoothing
    # top-k (Sinha et al. 2020): G's adversarial term counts only this share of its batch, the samples
    # D finds most real; the rest, whose gradients pull towards the space between modes, are left
    # out of it (1: off; 0.5 in the article). The share falls linearly from 1 over top_k_anneal steps
    top_k: float = 1.0
    top_k_anneal: int = 0
    instance_noise: float = 0.0  # std of Gaussian noise added to D's inputs (0: off)
    instance_noise_anneal: int = 0  # steps over which that std decays linearly to 0 (0: constant)
    # DiffAugment's translation: images D judges (real and generated alike) shifted by up to this
    # fraction of their size, differentiably (0: off; 0.125 in Zhao et al. 2020); image data only
    translate: float = 0.0
    # InfoGAN's Q judges G's images through a random affine warp of this strength (1: rotation up to
    # 20 degrees, shear up to 0.3, scale +-10%, shift up to 1/14 of the size; 0: off). A category
    # must then survive changes of slant, size and place, which alter a digit's style and not which
    # digit it is. Image data only; needs loss.info_weight > 0
    info_warp: float = 0.0
    # the share of G's batch whose warped copies Q judges (the InfoGAN term then counts those only).
    # The warped pass through D costs less for fewer rows, not in proportion: on a 2-core CPU a step
    # was 1.3-1.45x as long for all, 1.14x for a quarter (the small networks' fixed cost per operation)
    info_warp_share: float = 1.0
    # Q also sorts real images into the categories, the same for each image and a warped copy of it
    # (loss.info_warp's warps): invariant information clustering (Ji et al. 2019), this weight times
    # minus the mutual information between the two copies' categories, in D's loss on the steps of
    # the InfoGAN term or loss.info_real_every's (0: off). Q's categories then mean which digit, on
    # the data as on G's images, and G's categories, which Q must tell apart, follow. Needs
    # loss.info_warp > 0
    info_real: float = 0.0
    # Q sorts real images on every this-many-th step (0: on the InfoGAN term's steps, loss.info_every)
    info_real_every: int = 0
    # the run's first steps train D on Q's sorting of real images alone, while G waits (0: none): up to
    # this many, and at most half of the run's first train.steps, so a short trial still trains G. A
    # sorting step is a few times cheaper than a GAN step, and G's categories then start from a
    # sorting of the data instead of forming with it (the aim; on mnist-dcgan it scored lower at equal
    # time: docs/results.md). The time budget (train.max_minutes) does not cap these steps, nor does
    # the EMA's ramp skip them. Needs loss.info_real > 0
    info_real_first: int = 0


@dataclass(frozen=True)
class OptimConfig:
    name: Literal["adam", "rmsprop", "sgd"] = "adam"
    lr: float = 2e-4
    beta1: float = 0.5  # adam
    beta2: float = 0.999  # adam
    alpha: float = 0.99  # rmsprop smoothing constant
    rms_init: float = 0.0  # rmsprop: starting squared-gradient average (TensorFlow 1 starts at 1.0)
    eps: float = 1e-8
    momentum: float = 0.0  # sgd, rmsprop


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000  # one step = n_d D updates then n_g G updates
    # a time budget: training stops at the first log step (log_every) that begins after this many
    # minutes of training in all, resumes included, and saves that step as its last (0: none).
    # Schedules that count steps (learning rates, annealed terms) still count towards train.steps
    max_minutes: float = 0.0
    batch_size: int = 256
    n_d: int = 1
    n_g: int = 1
    reuse_batch: bool = False  # one real batch and one noise batch for all updates of a step
    # alternating: D updates on a generated batch, then G updates from a new G forward (the default);
    # shared: the first G update reuses D's generated batch and its graph (pytorch/examples' DCGAN);
    # simultaneous: one G forward and one D pass give both losses and both updates (TF's DCGAN tutorial)
    schedule: Literal["alternating", "shared", "simultaneous"] = "alternating"
    share_fake: bool = False  # earlier name of schedule = "shared" (kept so saved configs load)
    ema_decay: float = 0.0  # exponential moving average of G's weights (0: off)
    lr_schedule: Literal["constant", "linear", "cosine"] = "constant"  # both learning rates over train.steps
    lr_final: float = 0.0  # linear/cosine: the last step's rate as a fraction of the first's
    drs_steps: int = 0  # after training, fit a critic this many steps for discriminator rejection sampling (0: off)
    drs_hidden: tuple[int, ...] = ()  # mlp: the critic's hidden widths (empty: model.d_hidden)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # CPU threads for this run (0: auto: 1 for vector data, whose small networks gain nothing from more;
    # for images PyTorch's own count: the cores, or OMP_NUM_THREADS, which torchrun sets to 1)
    threads: int = 0
    # CPU: floats below 1.2e-38 (denormals) computed as 0, as TensorFlow does; x86 handles denormals
    # in slow microcode, and Adam's state fills with them as training goes on (the MLP GAN at batch
    # 64 ran at 5,900-6,200 images/s from step 400 on without this, 7,560-7,690 with it)
    flush_denormals: bool = True
    # bf16 / fp16: forward passes autocast to bfloat16 / float16 (fp16 with loss scaling, for GPUs
    # without bfloat16 units); auto: bf16 for image data where the device computes it fast (GPUs with
    # bfloat16 units, CPUs with AMX or AVX-512-BF16 where a probe times it faster), fp32 elsewhere
    precision: Literal["fp32", "bf16", "fp16", "auto"] = "auto"
    # bf16 on a CPU: auto: Adam steps from the bfloat16 gradients in gankit's own kernel, compiled with
    # the machine's C compiler on first use (one pass instead of three); torch: PyTorch's fused Adam
    adam_kernel: Literal["auto", "torch"] = "auto"
    log_every: int = 10
    tensorboard: bool = False  # also write RUN/tensorboard/ event files (needs the tensorboard package)
    snapshot_every: int = 500  # views of D and G for the plots (0: off)
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    on_nonfinite: Literal["rollback", "stop"] = "rollback"  # NaN/inf loss: retry from the last checkpoint
    nonfinite_retries: int = 3  # rollbacks before giving up
    nonfinite_lr_factor: float = 0.5  # each rollback multiplies both learning rates by this


@dataclass(frozen=True)
class VizConfig:
    n_points: int = 512  # fixed real and generated points drawn in every view
    grid_size: int = 100  # resolution of the decision-surface grid
    plot_at_end: bool = True


@dataclass(frozen=True)
class EvalConfig:
    every: int = 0  # evaluate the generator every this many steps and at the end (0: off)
    n: int = 0  # samples per evaluation (0: 2,500 for vectors, 10,000 for images)
    metrics: tuple[str, ...] = ()  # names from `gankit list metrics` (empty: those that fit the data)


@dataclass(frozen=True)
class RunConfig:
    preset: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim_g: OptimConfig = field(default_factory=OptimConfig)
    optim_d: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    viz: VizConfig = field(default_factory=VizConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        check_ranges(self)


# --------------------------------------------------------------------------- value checking

def _describe(tp: Any) -> str:
    if get_origin(tp) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if get_origin(tp) is tuple:
        return "a list of strings" if get_args(tp)[0] is str else "a list of integers"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, str(tp))


def coerce(key: str, value: Any, tp: Any) -> Any:
    """Check `value` against the field type `tp`; return it in the field's own type."""
    origin = get_origin(tp)
    if origin is Literal:
        if value in get_args(tp):
            return value
    elif origin is tuple and get_args(tp)[0] is str:
        if isinstance(value, str):  # --set eval.metrics=modes,mmd
            return tuple(v.strip() for v in value.split(",") if v.strip())
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return tuple(value)
    elif origin is tuple:
        if isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return tuple(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    raise ConfigError(f"{key} = {value!r} is not valid: expected {_describe(tp)}")


def _require(ok: bool, key: str, value: Any, need: str) -> None:
    if not ok:
        raise ConfigError(f"{key} = {value!r} is not valid: {need}")


def check_ranges(cfg: RunConfig) -> None:
    """Cross-field and range checks that types alone cannot express."""
    m, t = cfg.model, cfg.train
    _require(cfg.data.channels in (1, 3), "data.channels", cfg.data.channels, "must be 1 (grey) or 3 (RGB)")
    _require(8 <= cfg.data.image_size <= 1024, "data.image_size", cfg.data.image_size, "must be in [8, 1024]")
    _require(m.z_dim >= 1, "model.z_dim", m.z_dim, "must be >= 1")
    _require(m.z_std > 0, "model.z_std", m.z_std, "must be > 0 (1: the noise as drawn)")
    _require(m.z_categories >= 0, "model.z_categories", m.z_categories, "must be >= 0 (0: no categorical code)")
    _require(not m.code_batch_norm or (m.name == "dcgan" and m.z_categories > 0 and not m.conditional),
             "model.code_batch_norm", m.code_batch_norm,
             "needs model.name = 'dcgan', model.z_categories > 0 and model.conditional = false; or set it to false")
    _require(m.code_batch_norm_scale or m.code_batch_norm, "model.code_batch_norm_scale", m.code_batch_norm_scale,
             "only applies with model.code_batch_norm = true; set both, or leave it out")
    _require(m.code_hidden >= 0, "model.code_hidden", m.code_hidden, "must be >= 0 (0: a linear code head)")
    for key in ("g_hidden", "d_hidden"):
        widths = getattr(m, key)
        _require(all(w >= 1 for w in widths), f"model.{key}", list(widths), "every width must be >= 1")
    _require(0.0 <= m.d_dropout < 1.0, "model.d_dropout", m.d_dropout, "must be in [0, 1)")
    _require(m.d_feature_dim >= 0, "model.d_feature_dim", m.d_feature_dim, "must be >= 0 (0: no feature layer)")
    _require(m.pack >= 1, "model.pack", m.pack, "must be >= 1")
    _require(not (m.conditional and m.pack > 1), "model.pack", m.pack, "must be 1 when model.conditional = true")
    _require(m.conv_width >= 1, "model.conv_width", m.conv_width, "must be >= 1")
    _require(m.d_conv_width >= 0, "model.d_conv_width", m.d_conv_width, "must be >= 0 (0: model.conv_width)")
    _require(m.init_std > 0, "model.init_std", m.init_std, "must be > 0")
    _require(t.steps >= 1, "train.steps", t.steps, "must be >= 1")
    _require(t.max_minutes >= 0, "train.max_minutes", t.max_minutes, "must be >= 0 (0: no time budget)")
    _require(t.batch_size >= 1, "train.batch_size", t.batch_size, "must be >= 1")
    _require(t.batch_size % m.pack == 0, "train.batch_size", t.batch_size,
             f"must be a multiple of model.pack = {m.pack}")
    for key in ("n_d", "n_g", "log_every", "checkpoint_every", "keep_checkpoints"):
        _require(getattr(t, key) >= 1, f"train.{key}", getattr(t, key), "must be >= 1")
    _require(t.nonfinite_retries >= 0, "train.nonfinite_retries", t.nonfinite_retries, "must be >= 0")
    _require(0.0 < t.nonfinite_lr_factor <= 1.0, "train.nonfinite_lr_factor", t.nonfinite_lr_factor,
             "must be in (0, 1]")
    _require(t.snapshot_every >= 0, "train.snapshot_every", t.snapshot_every, "must be >= 0 (0: off)")
    _require(t.threads >= 0, "train.threads", t.threads, "must be >= 0 (0: auto)")
    _require(0.0 <= t.lr_final <= 1.0, "train.lr_final", t.lr_final, "must be in [0, 1]")
    _require(0.0 <= t.ema_decay < 1.0, "train.ema_decay", t.ema_decay, "must be in [0, 1) (0: off)")
    _check_loss(cfg.loss, m)
    for section in ("optim_g", "optim_d"):
        o = getattr(cfg, section)
        _require(o.lr > 0, f"{section}.lr", o.lr, "must be > 0")
        for key in ("beta1", "beta2", "alpha", "momentum"):
            _require(0.0 <= getattr(o, key) < 1.0, f"{section}.{key}", getattr(o, key), "must be in [0, 1)")
        _require(o.eps > 0, f"{section}.eps", o.eps, "must be > 0")
        _require(o.rms_init >= 0, f"{section}.rms_init", o.rms_init, "must be >= 0")
    _require(cfg.eval.every >= 0, "eval.every", cfg.eval.every, "must be >= 0 (0: off)")
    _require(cfg.eval.n == 0 or cfg.eval.n >= 10, "eval.n", cfg.eval.n, "must be 0 (the default) or >= 10")
    _require(cfg.viz.n_points >= 1, "viz.n_points", cfg.viz.n_points, "must be >= 1")
    _require(cfg.viz.grid_size >= 2, "viz.grid_size", cfg.viz.grid_size, "must be >= 2")


def _check_loss(lo: LossConfig, m: ModelConfig) -> None:
    """The loss section's ranges, and what its terms need of the model."""
    _require(0.0 <= lo.label_smoothing < 0.5, "loss.label_smoothing", lo.label_smoothing, "must be in [0, 0.5)")
    for key in ("gp_weight", "r1_gamma", "instance_noise", "info_weight", "mode_seeking"):
        _require(getattr(lo, key) >= 0, f"loss.{key}", getattr(lo, key), "must be >= 0")
    _require(lo.info_weight == 0 or m.z_categories > 0, "loss.info_weight", lo.info_weight,
             "needs a categorical code to recover: set model.z_categories (e.g. 8), or loss.info_weight = 0")
    _require(0.0 <= lo.translate < 0.5, "loss.translate", lo.translate,
             "must be in [0, 0.5): the largest shift as a fraction of the image size (0: off)")
    _require(0.0 <= lo.info_warp <= 2.0, "loss.info_warp", lo.info_warp,
             "must be in [0, 2] (0: off; 1: rotation up to 20 degrees; far past 2 a digit turns over)")
    _require(lo.info_every >= 1, "loss.info_every", lo.info_every, "must be >= 1 (1: the InfoGAN term on every step)")
    _require(lo.info_warp == 0 or lo.info_weight > 0, "loss.info_warp", lo.info_warp,
             "warps what InfoGAN's Q judges: set loss.info_weight > 0 (and model.z_categories), or loss.info_warp = 0"
             + (" and loss.info_real = 0" if lo.info_real > 0 else ""))
    _require(lo.info_real >= 0, "loss.info_real", lo.info_real, "must be >= 0 (0: off)")
    _require(lo.info_real == 0 or lo.info_warp > 0, "loss.info_real", lo.info_real,
             "pairs each real image with a warped copy: set loss.info_warp > 0 (and loss.info_weight > 0), "
             "or loss.info_real = 0")
    _require(lo.info_real_every >= 0, "loss.info_real_every", lo.info_real_every,
             "must be >= 0 (1: Q sorts real images on every step; 0: on the InfoGAN term's steps, loss.info_every)")
    _require(lo.info_real_every == 0 or lo.info_real > 0, "loss.info_real_every", lo.info_real_every,
             "sets the steps of Q's sorting of real images: set loss.info_real > 0, or loss.info_real_every = 0")
    _require(lo.info_real_first >= 0, "loss.info_real_first", lo.info_real_first,
             "must be >= 0: the steps at the start that train Q's sorting of real images alone (0: none)")
    _require(lo.info_real_first == 0 or lo.info_real > 0, "loss.info_real_first", lo.info_real_first,
             "trains Q's sorting of real images first: set loss.info_real > 0, or loss.info_real_first = 0")
    _require(0.0 < lo.info_warp_share <= 1.0, "loss.info_warp_share", lo.info_warp_share,
             "must be in (0, 1]: the share of G's batch Q judges warped (1: all)")
    _require(lo.r1_every >= 1, "loss.r1_every", lo.r1_every, "must be >= 1 (1: R1 on every step)")
    _require(0.0 < lo.top_k <= 1.0, "loss.top_k", lo.top_k,
             "must be in (0, 1]: the share of G's batch its adversarial term counts (1: all, off)")
    _require(lo.top_k_anneal >= 0, "loss.top_k_anneal", lo.top_k_anneal, "must be >= 0 (0: loss.top_k from the start)")
    _require(lo.instance_noise_anneal >= 0, "loss.instance_noise_anneal", lo.instance_noise_anneal, "must be >= 0")
    _require(lo.mode_seeking_anneal >= 0, "loss.mode_seeking_anneal", lo.mode_seeking_anneal,
             "must be >= 0 (0: loss.mode_seeking at every step)")
    if lo.label_smoothing > 0:
        _require(lo.name in ("ns", "minimax", "lsgan"), "loss.label_smoothing", lo.label_smoothing,
                 f"applies to the ns, minimax and lsgan losses, not '{lo.name}'; set it to 0")


# --------------------------------------------------------------------------- dict <-> config

def _section_types(cls: type) -> dict[str, Any]:
    return get_type_hints(cls, include_extras=False)


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """Build a RunConfig from nested dicts (parsed TOML), checking every key and value."""
    top_types = _section_types(RunConfig)
    kwargs: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in top_types:
            raise ConfigError(f"unknown config section {key!r}{did_you_mean(key, list(top_types))}; "
                              f"valid: {', '.join(top_types)}")
        section_type = top_types[key]
        if not dataclasses.is_dataclass(section_type):
            kwargs[key] = coerce(key, value, section_type)
            continue
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a table of settings, got {value!r}")
        kwargs[key] = _build_section(key, section_type, value)
    return RunConfig(**kwargs)


def _build_section(name: str, cls: type, values: dict[str, Any]) -> Any:
    types_ = _section_types(cls)
    checked = {}
    for key, value in values.items():
        if key not in types_:
            raise ConfigError(f"unknown config key {name + '.' + key!r}{did_you_mean(key, list(types_))}; "
                              f"valid keys of [{name}]: {', '.join(types_)}")
        checked[key] = coerce(f"{name}.{key}", value, types_[key])
    return cls(**checked)


def to_dict(cfg: RunConfig) -> dict[str, Any]:
    out = dataclasses.asdict(cfg)
    return _lists(out)


def _lists(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _lists(v) for k, v in obj.items()}
    if isinstance(obj, tuple):
        return list(obj)
    return obj


def dumps(cfg: RunConfig) -> str:
    """The config as TOML. Written here, not with a TOML library, because the config is two flat
    levels of scalars and integer lists, and users read it: lists stay on one line."""
    return toml_value_table(to_dict(cfg))


def toml_value_table(raw: dict[str, Any]) -> str:
    """Nested dicts of scalars and lists (two levels) as TOML text."""
    lines = []
    tables = []
    for key, value in raw.items():
        if isinstance(value, dict):
            tables.append(f"\n[{toml_key(key)}]\n" + "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in value.items()))
        else:
            lines.append(f"{toml_key(key)} = {toml_value(value)}\n")
    return "".join(lines) + "".join(tables)


def toml_key(key: str) -> str:
    """A bare key when TOML allows one (A-Z a-z 0-9 _ -), else a quoted one: `# = 1` would be a comment."""
    return key if key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key) else json.dumps(key)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def loads(text: str, source: str = "config") -> RunConfig:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML ({exc}); fix the file or start from `gankit config PRESET`")
    return from_dict(raw)


def load(path: str | Path) -> RunConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist; give a preset name or an existing .toml file")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file '{path}' cannot be read ({exc})")
    return loads(text, source=f"config file '{path}'")


# --------------------------------------------------------------------------- overrides

def parse_override(item: str) -> tuple[list[str], Any]:
    """'train.steps=500' -> (['train', 'steps'], 500). Values are TOML; bare words are strings."""
    if "=" not in item:
        raise ConfigError(f"--set '{item}' is not key=value; example: --set train.steps=500")
    key, text = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set '{item}' has an empty key; example: --set loss.name=hinge")
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text  # a bare word such as points:data.npy
    return parts, value


def with_overrides(cfg: RunConfig, items: list[str]) -> RunConfig:
    raw = to_dict(cfg)
    for item in items:
        parts, value = parse_override(item)
        if len(parts) != 2:
            raise ConfigError(f"--set key '{'.'.join(parts)}' must be section.key, e.g. train.steps")
        section, key = parts
        if section not in raw or not isinstance(raw[section], dict):
            sections = [k for k, v in raw.items() if isinstance(v, dict)]
            raise ConfigError(f"unknown config section {section!r}{did_you_mean(section, sections)}; "
                              f"valid: {', '.join(sections)}")
        raw[section][key] = value
    return from_dict(raw)


# Settings `gankit resume --set` may change: where things are and what is written, never what is trained.
RESUME_SETTINGS = ("data.root", "data.download", "train.log_every", "train.snapshot_every",
                   "train.checkpoint_every", "train.keep_checkpoints", "viz.n_points", "viz.grid_size",
                   "viz.plot_at_end", "eval.every", "eval.n", "eval.metrics", "train.tensorboard",
                   "train.max_minutes")


def check_resume_settings(items: list[str]) -> None:
    """Refuse a --set on resume that would change the training a run is continuing."""
    for item in items:
        parts, _ = parse_override(item)
        key = ".".join(parts)
        if key not in RESUME_SETTINGS:
            raise ConfigError(f"--set {key}: a resumed run keeps the settings it was trained with; resume may "
                              f"change only {', '.join(RESUME_SETTINGS)} (use --steps for a new total, or "
                              "`gankit train` for a new run with other settings)")


def replace(cfg: RunConfig, section: str, **changes: Any) -> RunConfig:
    """A copy of cfg with some keys of one section changed (checked like any other value)."""
    raw = to_dict(cfg)
    raw[section].update(_lists(changes))
    return from_dict(raw)

