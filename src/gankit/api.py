"""The notebook facade, scikit-learn style: `GAN().fit(X).sample(1000)` (the `points` recipe for an
(n, dim) array X; any preset by name, e.g. `GAN("quadratic").fit()` on its own data).

Every fit writes a normal run directory (a temporary one unless `out` is given), so a run made
from Python can be plotted, resumed and sampled from the CLI too.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gankit import config as config_mod
from gankit.config import RunConfig
from gankit.data.toy import Points, validate_points
from gankit.errors import UserError
from gankit.rundir import MADE_BY_FIT, hold_run, prepare_out_dir
from gankit.data.images import ImageSource, to_nchw_uint8
from gankit.models import MODELS, plain
from gankit.models.noise import check_truncation, sample_noise
from gankit.training import checkpoint as ckpt
from gankit.training.state import Normalizer, measure_batch_norm, output_to_data
from gankit.training.rejection import Critic, generator_draw, rejection_sample


class GAN:
    """A GAN built from a preset (or a RunConfig) plus `settings` such as {"train.steps": 500}.
    The default preset, `points`, is the recipe for a user's own vectors: fit(X) with X of any dimension."""

    def __init__(self, preset: str | RunConfig = "points", settings: dict[str, Any] | None = None,
                 out: str | Path | None = None, progress: bool = False,
                 generator: nn.Module | None = None, discriminator: nn.Module | None = None):
        """generator, discriminator: your own networks as plain nn.Modules (models/plain.py says what
        they must take and give); the preset then gives everything else (loss, optimisers, steps...)."""
        from gankit.presets import load_preset  # presets import config only; kept local for clarity

        cfg = preset if isinstance(preset, RunConfig) else load_preset(preset)
        items = [f"{k}={config_mod.toml_value(v)}" for k, v in (settings or {}).items()]
        self._networks = _networks_of(generator, discriminator)  # this GAN's own, registered when it builds
        if self._networks is not None:
            # a preset's categories need gankit's D; a RunConfig passed in is the user's own choice
            code_off = _preset_code_off(cfg, settings or {}) if isinstance(preset, str) else []
            items = [f"model.name={plain.NAME}", *code_off, *items]
        self.config: RunConfig = config_mod.with_overrides(cfg, items)
        self.out, self.progress = out, progress
        self.run_dir: Path | None = None
        self._sampler: Sampler | None = None

    def fit(self, X: np.ndarray | None = None) -> "GAN":
        """Train on X (an (n, dim) array) or, with X None, on the config's dataset."""
        from gankit.training import Trainer

        self._register_networks()
        run_dir = Path(self.out) if self.out else Path(tempfile.mkdtemp(prefix="gankit-run-"))
        cfg, source, save_data = self.config, None, None
        if X is not None:  # kept in the run (data.npy / data.npz), so it resumes and evaluates without X
            source, data_name, save_data = _source_of(X, run_dir)
            cfg = config_mod.replace(cfg, "data", name=data_name)
        trainer = Trainer(cfg, run_dir, source=source)  # bad settings are refused before the folder is touched
        with hold_run(run_dir):
            prepare_out_dir(run_dir, overwrite=True, by=MADE_BY_FIT)  # a notebook cell run again replaces its own run
            if save_data is not None:
                save_data()
            trainer.fit(progress=self.progress)
        self.config, self.run_dir = cfg, run_dir
        self._sampler = Sampler.from_state(trainer.state_dict())
        return self

    def sample(self, n: int, seed: int | None = None, label: int | None = None, raw: bool = False,
               truncation: float = 1.0) -> np.ndarray:
        """n samples: vectors as float32 (n, dim) in the data's units; images as uint8 (n, H, W, C).
        For a conditional run, `label` picks the class (default: classes in turn). Runs trained with
        train.drs_steps keep only the samples their rejection critic accepts, unless raw.
        truncation < 1: G's continuous noise scaled by it, for samples nearer the middle of what G
        draws (clearer, less varied); 1 is the noise G was trained on."""
        return self.sampler.sample(n, seed, label, raw, truncation)[0]

    def evaluate(self, metrics: list[str] | None = None, n: int | None = None, seed: int = 0,
                 truncation: float = 1.0, raw: bool = False, live: bool = False) -> dict[str, Any]:
        """Score the fitted run as `gankit eval` does: the named metrics (`gankit list metrics`;
        default: those that fit the data) on n samples of the sampling generator (its noise
        scaled by `truncation`, as `sample`'s). raw: G's own samples, not through a rejection
        critic; live: G as the last step left it, not its EMA copy (as `gankit eval --raw / --live`).
        The scores come with what `gankit eval --json` prints beside them: step, drs, truncation."""
        from gankit.metrics.evaluate import evaluate
        from gankit.training import Trainer
        from gankit.training.evaluation import how_drawn, sampling_target

        self._register_networks()
        trainer = Trainer.resume(self._fitted_run())
        target = sampling_target(trainer, truncation, raw, live)
        return {**how_drawn(trainer, truncation), **evaluate(target, metrics, n, seed)}

    def plot(self) -> list[Path]:
        """(Re)draw the run's pictures, as `gankit plot`; returns the files written."""
        from gankit.viz.plots import plot_run

        return plot_run(self._fitted_run())

    def report(self, out: str | Path | None = None) -> Path:
        """Write the run's HTML report, as `gankit report` (default RUN/report.html); returns its path."""
        from gankit.report import write_report

        self._register_networks()  # the report counts the networks' parameters
        return write_report([self._fitted_run()], out)

    def history(self) -> list[dict[str, Any]]:
        """The run's metrics.jsonl rows: logged steps, evaluations and events."""
        import json

        text = (self._fitted_run() / "metrics.jsonl").read_text(encoding="utf-8")
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def _register_networks(self) -> None:
        """Networks from Python: make this GAN's own the model `python` of the process (another GAN
        given other modules may have registered its own since)."""
        _register(getattr(self, "_networks", None))

    def _fitted_run(self) -> Path:
        if self.run_dir is None:
            raise UserError("this GAN is not fitted yet: call fit() or gankit.load(RUN_DIR) first")
        return Path(self.run_dir)

    @property
    def sampler(self) -> "Sampler":
        if self._sampler is None:
            raise UserError("this GAN is not fitted yet: call fit() or gankit.load(RUN_DIR) first")
        return self._sampler

    @classmethod
    def load(cls, path: str | Path, live: bool = False, generator: nn.Module | None = None,
             discriminator: nn.Module | None = None) -> "GAN":
        """A trained GAN from a run directory or checkpoint file, ready to sample. live: sample the
        last training iterate of G itself, not its EMA copy or rejection critic (see Sampler).
        generator, discriminator: the modules a run trained from Python was given (model.name = 'python')."""
        networks = _networks_of(generator, discriminator)
        _register(networks)
        file = ckpt.find_checkpoint(path)
        state = ckpt.load_checkpoint(file)
        try:
            sampler = Sampler.from_state(state, live)
        except ckpt.STATE_ERRORS as exc:
            raise ckpt.incompatible(file, exc) from exc
        gan = cls(sampler.config)
        gan._networks = networks
        gan.run_dir = ckpt.run_dir_of(path)
        gan._sampler = sampler
        return gan


def load(path: str | Path, live: bool = False, generator: nn.Module | None = None,
         discriminator: nn.Module | None = None) -> GAN:
    return GAN.load(path, live, generator, discriminator)


def _preset_code_off(cfg: RunConfig, settings: dict[str, Any]) -> list[str]:
    """A preset's InfoGAN categories (model.z_categories with loss.info_weight) need gankit's own D, whose
    code head tells the category: with the user's networks they are off, so G takes z_dim-wide noise.
    G's batch norms by category (model.code_batch_norm) are gankit's G's: off too, and with them the
    mode-seeking term that keeps them from collapsing (loss.mode_seeking), and Q's warps and its sorting of
    real images (loss.info_warp, loss.info_real), which go with Q whenever the InfoGAN term ends up off.
    Settings the user gives win (an error then says what the plain D lacks)."""
    off = [] if "model.code_batch_norm" in settings else ["model.code_batch_norm=false"]  # gankit's G only
    user_set = {"model.code_batch_norm", "loss.mode_seeking", "loss.mode_seeking_anneal"} & set(settings)
    if cfg.model.code_batch_norm and cfg.loss.mode_seeking > 0 and not user_set:
        off.append("loss.mode_seeking=0")  # the preset's cure for a collapse its batch norms by category risk
    warp = [f"loss.{key}=0" for key in ("info_warp", "info_real", "info_real_first")  # Q's warps, its sorting of real images
            if getattr(cfg.loss, key) != 0 and f"loss.{key}" not in settings]
    if cfg.loss.info_weight == 0 or {"loss.info_weight", "model.z_categories"} & set(settings):
        return off + (warp if _is_zero(settings.get("loss.info_weight", cfg.loss.info_weight)) else [])
    return ["loss.info_weight=0", "model.z_categories=0", *warp, *off]


def _is_zero(value: Any) -> bool:
    """Whether a setting's value (a number, or the text a user wrote) is 0; text that is no number is not."""
    try:
        return float(value) == 0
    except (TypeError, ValueError):
        return False


def _networks_of(generator: nn.Module | None, discriminator: nn.Module | None):
    """The model builder of the user's two modules (models/plain.py), or None when none are given."""
    if generator is None and discriminator is None:
        return None
    if generator is None or discriminator is None:
        raise UserError("give both generator= and discriminator= (plain nn.Modules), or neither")
    return plain.plain_builder(generator, discriminator)


def _register(networks) -> None:
    """Make these networks (a builder from _networks_of, or None: nothing to do) the model `python`."""
    if networks is not None:
        MODELS.register(plain.NAME, "your own G and D as nn.Modules, from Python", replace=True)(networks)


def _source_of(X: Any, run_dir: Path):
    """(data source, data.name, a function that saves the data into the run) for X: an (n, dim)
    array of vectors, images (N, H, W), (N, H, W, C) or (N, C, H, W) as uint8 or floats in [0, 1], a
    torch tensor of either, or a torch Dataset of them (items, or (item, label) pairs)."""
    array = _as_array(X)
    if array.ndim <= 2:
        points = Points(validate_points(array, "X").astype(np.float32), source="X")
        file = (run_dir / "data.npy").resolve()
        return points, f"points:{file}", lambda: np.save(file, points.data.numpy())
    if array.ndim == 4 and array.shape[1] in (1, 3) and array.shape[-1] not in (1, 3):
        array = array.transpose(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
    images = ImageSource(to_nchw_uint8(array, "X"), None, "images X")
    file = (run_dir / "data.npz").resolve()
    return images, f"images:{file}", lambda: np.savez(file, images=images.images.numpy().transpose(0, 2, 3, 1))


def _as_array(X: Any) -> np.ndarray:
    if isinstance(X, torch.utils.data.Dataset) and not isinstance(X, torch.Tensor):
        items = [X[i] for i in range(len(X))]  # a map-style Dataset, read once
        items = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
        X = torch.stack([torch.as_tensor(item) for item in items])
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    return np.asarray(X)


@dataclasses.dataclass
class Sampler:
    """Just what sampling needs: the generator (EMA when trained with it) and the data's scale."""

    config: RunConfig
    generator: nn.Module
    mean: torch.Tensor
    std: torch.Tensor
    shape: tuple[int, ...]
    num_classes: int
    critic: Critic | None = None  # discriminator rejection sampling, when the run fitted one

    @classmethod
    def from_state(cls, state: dict[str, Any], live: bool = False) -> "Sampler":
        """The run's sampler: G's EMA copy when it has one, through the rejection critic when fitted.
        live: G as the last training step left it, alone (the critic was fitted for the sampler's G)."""
        cfg = config_mod.loads(state["config"], source="the config inside the checkpoint")
        shape, classes = tuple(int(v) for v in state["data_shape"]), int(state["num_classes"])
        g, _ = MODELS.get(cfg.model.name)(cfg.model, shape, classes)
        if state.get("ema") is not None and not live:
            weights = {k[len("module."):]: v for k, v in state["ema"].items() if k.startswith("module.")}
        else:
            weights = state["g"]
        g.load_state_dict(weights)
        if state.get("ema") is not None and not live:  # the trainer's batch-norm statistics for the EMA G
            measured = state.get("sampler_buffers")
            if measured:
                g.load_state_dict({**weights, **measured})
            else:  # a run saved before they were kept: measured here the same way
                g = measure_batch_norm(g, cfg.model, classes)
        use_critic = state.get("critic") and not live
        critic = Critic.from_state(state["critic"], cfg, shape, classes) if use_critic else None
        if critic is not None and not critic.usable:  # training warned: it keeps too few to be worth it
            critic = None
        return cls(cfg, g.eval(), state["norm"]["mean"], state["norm"]["std"], shape, classes, critic)

    @property
    def is_image(self) -> bool:
        return len(self.shape) == 3

    def noise(self, n: int, seed: int | None, truncation: float = 1.0) -> torch.Tensor:
        rng = torch.Generator().manual_seed(seed) if seed is not None else None
        return sample_noise(n, self.config.model, rng, truncation=truncation)

    def labels(self, n: int, label: int | None, seed: int | None) -> torch.Tensor | None:
        """None for an unconditional G; else all `label`, or classes in turn (0, 1, ..., 0, 1, ...)."""
        if not self.num_classes:
            if label is not None:
                raise UserError("--label needs a class-conditional run (model.conditional = true)")
            return None
        if label is not None and not 0 <= label < self.num_classes:
            raise UserError(f"--label {label} is not a class of this run: use 0 to {self.num_classes - 1}")
        return torch.full((n,), label) if label is not None else torch.arange(n) % self.num_classes

    @torch.no_grad()
    def generate(self, z: torch.Tensor, labels: torch.Tensor | None) -> np.ndarray:
        """G(z) as it comes, in the data's units. Vectors: float32 (n, dim). Images: uint8 (n, H, W, C)."""
        return self.to_data(self.generator(z, labels))

    def to_data(self, out: torch.Tensor) -> np.ndarray:
        image_output = self.config.model.g_output if self.is_image else None
        return output_to_data(out, Normalizer(self.mean, self.std), image_output)

    def sample(self, n: int, seed: int | None = None, label: int | None = None,
               raw: bool = False, truncation: float = 1.0) -> tuple[np.ndarray, np.ndarray | None]:
        """n samples (and their labels when conditional). When the run fitted a rejection critic
        (train.drs_steps), only the samples it keeps, unless raw. truncation < 1 scales G's
        continuous noise (models/noise.py): samples nearer the middle of what G draws, less varied."""
        if n < 1:
            raise UserError(f"number of samples must be >= 1, got {n}")
        labels = self.labels(n, label, seed)
        check_truncation(truncation, through_critic=self.critic is not None and not raw)
        if self.critic is not None and not raw:
            rng = torch.Generator()
            if seed is None:
                rng.seed()  # a fresh random seed, as unseeded noise gets
            else:
                rng.manual_seed(seed)
            draw = generator_draw(self.generator, self.config, self.num_classes, torch.device("cpu"))
            out = self.to_data(rejection_sample(self.critic, draw, n, rng, labels))
        else:
            out = self.generate(self.noise(n, seed, truncation), labels)
        return out, (labels.numpy() if labels is not None else None)

    def interpolate(self, rows: int, steps: int = 10, seed: int | None = None,
                    label: int | None = None, truncation: float = 1.0) -> np.ndarray:
        """`rows` straight paths in latent space between random pairs of z, `steps` images each. With a
        categorical code (model.z_categories) a path keeps its start's category: a blend of two one-hot
        codes is no category G was trained on (and with model.code_batch_norm would jump midway)."""
        check_truncation(truncation)  # interpolations are G's alone, never through the critic
        ends = self.noise(2 * rows, seed, truncation).reshape(rows, 2, -1)
        z_dim = self.config.model.z_dim
        ends[:, 1, z_dim:] = ends[:, 0, z_dim:]  # nothing to copy without categories
        t = torch.linspace(0, 1, steps)[None, :, None]
        z = ((1 - t) * ends[:, :1] + t * ends[:, 1:]).reshape(rows * steps, -1)
        labels = self.labels(rows * steps, label, seed)
        if labels is not None and label is None:
            labels = (torch.arange(rows) % self.num_classes).repeat_interleave(steps)
        return self.generate(z, labels)
