"""Scoring a run while it trains (eval.every) or afterwards (`gankit eval`): what the metrics need
of the run (samples of the sampling generator, sigmoid D for the probability view, the live G),
the evaluation row in metrics.jsonl, and the probability-view snapshot on 2-D data of known density."""
from __future__ import annotations

import functools
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from gankit.metrics import evaluate as metrics_eval
from gankit.models.base import eval_mode
from gankit.models.noise import check_truncation, sample_noise
from gankit.training.rejection import rejection_sample
from gankit.training.state import output_to_data

if TYPE_CHECKING:
    from gankit.training.trainer import Trainer


def sampling_target(run: "Trainer", truncation: float = 1.0, raw: bool = False,
                    live: bool = False) -> metrics_eval.EvalTarget:
    """What `gankit eval` and `GAN.evaluate` score. raw: G's own samples, not through a rejection
    critic; live: G as the last step left it, not its EMA copy (both drop them from `run`)."""
    if raw or live:
        run.critic = None
    if live:
        run.ema = None  # the sampler is then G itself
    return run.eval_target(truncation)


def how_drawn(run: "Trainer", truncation: float = 1.0) -> dict[str, Any]:
    """What a row of scores says of its samples: the step, whether a critic chose them (and the
    share it keeps), and the truncation when it is not 1."""
    row: dict[str, Any] = {"step": run.step, "drs": run.rejection_critic is not None}
    if run.rejection_critic is not None:
        row["drs_acceptance"] = run.rejection_critic.acceptance
    if truncation != 1.0:
        row["truncation"] = truncation
    return row


class Evaluation:
    def __init__(self, run: "Trainer"):
        self.run = run

    def target(self, truncation: float = 1.0) -> metrics_eval.EvalTarget:
        """What the metrics need: the data, samples of the sampling generator (its continuous noise
        scaled by `truncation`) and, for vector data judged one point at a time, sigmoid D. The
        probability view compares D with D* for the generator D was trained against, so it gets the
        live G's own samples when the sampler differs (an EMA copy of G, the rejection critic on
        top, or truncated noise)."""
        run = self.run
        check_truncation(truncation, through_critic=run.rejection_critic is not None)
        # D against D* needs D to judge one point at a time, as a probability (a cross-entropy loss)
        vector_d = not run.is_image and run.cfg.model.pack == 1 and run.loss.pair.probabilistic
        sampler_differs = run.ema is not None or run.rejection_critic is not None or truncation != 1.0
        sample = functools.partial(self.samples, truncation=truncation)  # fixed now, whatever later calls ask
        return metrics_eval.EvalTarget(run.source, sample, self.d_prob if vector_d else None,
                                       self.live_samples if sampler_differs else None)

    @torch.no_grad()
    def samples(self, n: int, seed: int, truncation: float = 1.0) -> np.ndarray:
        """n samples in the data's units (uint8 NHWC images), through the rejection critic if fitted
        (else the sampling G's, its noise scaled by `truncation`)."""
        run = self.run
        if run.rejection_critic is not None:
            check_truncation(truncation, through_critic=True)  # a critic fitted since the target was made
            rng = torch.Generator().manual_seed(seed)
            labels = torch.arange(n) % run.num_classes if run.num_classes else None
            return self.to_data(rejection_sample(run.rejection_critic, run.draw_fake, n, rng, labels))
        return self.samples_of(run.sampler_g, n, seed, truncation)

    def live_samples(self, n: int, seed: int) -> np.ndarray:
        return self.samples_of(self.run.g, n, seed)

    @torch.no_grad()
    def samples_of(self, generator: nn.Module, n: int, seed: int, truncation: float = 1.0) -> np.ndarray:
        """n samples of `generator` in the data's units, in eval mode, 1,000 at a time."""
        run, rng = self.run, torch.Generator().manual_seed(seed)
        z = sample_noise(n, run.cfg.model, rng, truncation=truncation).to(run.device)
        labels = (torch.arange(n) % run.num_classes).to(run.device) if run.num_classes else None
        with eval_mode(generator) as g:
            parts = [self.to_data(g(z[i:i + 1000], labels[i:i + 1000] if labels is not None else None))
                     for i in range(0, n, 1000)]
        return np.concatenate(parts)

    def to_data(self, x: torch.Tensor) -> np.ndarray:
        run = self.run
        return output_to_data(x, run.norm, run.cfg.model.g_output if run.is_image else None)

    @torch.no_grad()
    def d_prob(self, x: np.ndarray) -> np.ndarray:
        """D's estimate of p_data / (p_data + p_g) at x. With one-sided label smoothing (real target
        t = 1 - a) D's optimum is t p_data / (p_data + p_g), so sigmoid D is divided by t."""
        run = self.run
        with eval_mode(run.d) as d:
            logits = d(run.norm.to_model(torch.as_tensor(x, dtype=torch.float32, device=run.device)))
        target = 1.0 - run.cfg.loss.label_smoothing
        return (torch.sigmoid(logits).double() / target).clamp(max=1.0).cpu().numpy()

    def evaluate(self) -> dict[str, Any]:
        """Score the generator now; log the numbers to metrics.jsonl (rows with "eval": true) and,
        on 2-D data of known density, save the probability view (D, D*, densities) as a snapshot."""
        run = self.run
        target, e = self.target(), run.cfg.eval
        names = list(e.metrics) or metrics_eval.default_metrics(target)
        started = time.perf_counter()
        scores = metrics_eval.evaluate(target, names, e.n or None, seed=0)
        row = {"step": run.step, "eval": True, **({"drs": True} if run.rejection_critic is not None else {}),
               **{k: round(v, 6) if isinstance(v, float) else v for k, v in scores.items()},
               "eval_seconds": round(time.perf_counter() - started, 3)}
        run.log.append(row)
        if "probability" in names:
            self.save_probability_view(target)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in scores.items() if isinstance(v, (int, float)) and k != "n")
        run.log.say(f"gankit: eval at step {run.step}: {shown}")
        return row

    def save_probability_view(self, target: metrics_eval.EvalTarget) -> None:
        from gankit.metrics.probability import GeneratedDensity, probability_grid

        run = self.run
        fake = target.game_sample(run.cfg.eval.n or 2500, 0)
        real = run.snapshots.real.numpy()
        points = np.concatenate([real, fake])
        low, high = np.percentile(points, 0.5, axis=0), np.percentile(points, 99.5, axis=0)
        low, high = np.minimum(low, real.min(0)), np.maximum(high, real.max(0))
        pad = 0.1 * (high - low) + 1e-6
        density = GeneratedDensity(fake)
        log_p_data = metrics_eval.blurred_log_prob(run.source, density)
        grid = probability_grid(log_p_data, density, target.d_prob, low - pad, high + pad)
        folder = run.run_dir / "snapshots"
        folder.mkdir(exist_ok=True)
        np.savez_compressed(folder / f"prob-step-{run.step:06d}.npz", step=run.step, real=real,
                            fake=fake[:1000], **grid)
