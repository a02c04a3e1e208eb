"""A run on disk: the run folder made ready to train into, checkpoints written (atomically, by
process 0, with every process's random state) and read back, so that a resumed run continues
exactly where it stopped."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

import gankit
from gankit import config as config_mod
from gankit.errors import TrainingError, UserError
from gankit.io import atomic_write_text
from gankit.models.base import has_batch_norm
from gankit.rundir import is_run, mark_run
from gankit.training import checkpoint as ckpt
from gankit.training import distributed
from gankit.training.optim import load_optimizer_state
from gankit.training.rejection import Critic
from gankit.training.state import Normalizer, capture_rng, restore_rng

if TYPE_CHECKING:
    from gankit.training.trainer import Trainer

RANK_SEED_STRIDE = 7919  # each process of a multi-process run draws its own data and noise


class RunStore:
    def __init__(self, run: "Trainer"):
        self.run = run
        self.rng_ranks: list[dict[str, Any]] | None = None  # every process's random state, at the last save
        self.resume_note: str | None = None  # said once training starts, when a resume could not be exact

    # ------------------------------------------------------------------ the run folder
    def prepare_run_dir(self) -> None:
        run = self.run
        run.run_dir.mkdir(parents=True, exist_ok=True)
        if not is_run(run.run_dir):
            mark_run(run.run_dir, "Trainer")
        atomic_write_text(run.run_dir / "config.toml", config_mod.dumps(run.cfg))
        for stale in [*run.run_dir.glob(".*.tmp"), *(run.run_dir / "checkpoints").glob(".*.tmp")]:
            stale.unlink()  # left by a write that a crash cut short; the complete files are untouched
        run.log.truncate(run.step)
        moved = self.set_aside_later_checkpoints()
        if moved:
            run.log.event("resumed_earlier", message=f"training continues from step {run.step}; the {moved} "
                                                     "later checkpoint(s) moved to checkpoints/abandoned/")

    def set_aside_later_checkpoints(self) -> int:
        """Training continues from an earlier checkpoint (a resume from step-N.pt when latest.pt is
        damaged, or a rollback): the checkpoints after it belong to a continuation no longer followed.
        They move to checkpoints/abandoned/ (kept, not deleted) and latest.pt names the step continued
        from. Returns how many moved."""
        run = self.run
        if not run.world.is_main:
            return 0
        folder = run.run_dir / "checkpoints"
        later = [f for f in ckpt.step_files(folder) if ckpt.step_of(f) > run.step]
        if later:
            (folder / "abandoned").mkdir(exist_ok=True)
            for file in later:
                file.replace(folder / "abandoned" / file.name)
            current = folder / f"step-{run.step:06d}.pt"
            if current.is_file():
                ckpt.point_latest(folder, current)
        return len(later)

    # ------------------------------------------------------------------ saving
    def save(self) -> Path:
        run = self.run
        return ckpt.save_checkpoint(self.state_dict(), run.run_dir / "checkpoints", run.step,
                                    run.cfg.train.keep_checkpoints)

    def save_or_warn(self, gather: bool = True) -> Path | None:
        """Save a checkpoint; if the disk refuses, say so and keep the previous one. In a multi-process
        run every process sends its random state (gather) and process 0 writes. The state is checked
        finite by the callers (the loop's step, save_final), once, before they save."""
        run = self.run
        if run.world.active and gather:
            self.rng_ranks = distributed.gather_to_main(capture_rng(run.data_rng, run.noise_rng))
        if not run.world.is_main:
            return run.run_dir / "checkpoints" / "latest.pt"
        try:
            return self.save()
        except OSError as exc:
            run.log.event("checkpoint_failed", message=f"could not write the checkpoint ({exc.strerror or exc}); "
                                                       "the previous checkpoint is intact")
            return None

    def save_final(self, gather: bool = True) -> None:
        run = self.run
        bad = run.guards.nonfinite_state()  # a stop signal can end a run between the loop's checks
        if bad:
            raise TrainingError(f"non-finite {', '.join(bad)} at step {run.step}, so it was not saved; "
                                f"`gankit resume {run.run_dir}` continues from the last checkpoint")
        if self.save_or_warn(gather) is None:
            raise TrainingError(f"the final checkpoint of {run.run_dir} could not be written; free disk space, "
                                f"then `gankit resume {run.run_dir}` continues from the last one saved")

    # ------------------------------------------------------------------ the state
    def state_dict(self) -> dict[str, Any]:
        run = self.run
        return {
            "gankit_version": gankit.__version__,
            "config": config_mod.dumps(run.cfg),
            "step": run.step,
            "elapsed": run.elapsed,
            "data_shape": list(run.source.shape),
            "num_classes": run.num_classes,
            "precision": run.precision_choice.saved(run.device),  # auto's choice: a resume keeps it
            "g": run.g.state_dict(),
            "d": run.d.state_dict(),
            "ema": run.ema.state_dict() if run.ema is not None else None,
            "sampler_buffers": self.sampler_buffers(),
            "opt_g": run.opt_g.state_dict(),
            "opt_d": run.opt_d.state_dict(),
            "scalers": run.precision.scaler_states({"g": run.opt_g, "d": run.opt_d}),  # fp16's loss scales
            "norm": run.norm.state_dict(),
            "rng": capture_rng(run.data_rng, run.noise_rng),
            "rng_ranks": self.rng_ranks_now(),
            "critic": run.critic.state_dict() if run.critic is not None else None,
            "guard": {"rollbacks": run._rollbacks, "lr_scale": run._lr_scale, "schedule_steps": run.schedule_steps},
        }

    def sampler_buffers(self) -> dict[str, torch.Tensor] | None:
        """The EMA G's measured batch-norm statistics, so `gankit sample` need not measure them again."""
        run = self.run
        if run.ema is None or not has_batch_norm(run.g):
            return None
        return {name: b.detach().clone() for name, b in run.sampler_g.named_buffers()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        run = self.run
        run.g.load_state_dict(state["g"])
        run.d.load_state_dict(state["d"])
        if run.ema is not None:
            run.ema.load_state_dict(state["ema"])
            run._sampler_copy = None
        load_optimizer_state(run.opt_g, state["opt_g"])
        load_optimizer_state(run.opt_d, state["opt_d"])
        run.precision.load_scaler_states(state.get("scalers"), {"g": run.opt_g, "d": run.opt_d})
        run.norm = Normalizer(state["norm"]["mean"], state["norm"]["std"])
        run.step, run.elapsed = int(state["step"]), float(state["elapsed"])
        run.loss.forget_last_stats()
        guard = state.get("guard") or {}  # runs saved before it was kept: no rollbacks, the saved length
        run._rollbacks, run._lr_scale = int(guard.get("rollbacks", 0)), float(guard.get("lr_scale", 1.0))
        run.schedule_steps = int(guard.get("schedule_steps", run.schedule_steps))
        self.restore_rng(state)
        if state.get("critic") is not None:
            try:
                run.critic = Critic.from_state(state["critic"], run.cfg, run.source.shape, run.num_classes)
                run.critic.net.to(run.device)
            except UserError:
                run.critic = None  # an old critic that no longer loads: fit() fits a new one at the end

    def rng_ranks_now(self) -> list[dict[str, Any]] | None:
        """Every process's random state for a multi-process run (process 0's as it is now)."""
        run = self.run
        if not run.world.active or self.rng_ranks is None:
            return None
        return [capture_rng(run.data_rng, run.noise_rng), *self.rng_ranks[1:]]

    def restore_rng(self, state: dict[str, Any]) -> None:
        """Each process continues its own streams when the run is resumed on as many processes as
        saved it; on another number they start afresh from (seed, step, rank), which is said."""
        run = self.run
        ranks = state.get("rng_ranks") or [state["rng"]]
        if len(ranks) == run.world.size:
            restore_rng(ranks[run.world.rank], run.data_rng, run.noise_rng)
            return
        seed = run.cfg.train.seed + RANK_SEED_STRIDE * run.world.rank + 1_000_003 * int(state["step"])
        run.data_rng.manual_seed(seed + 1)
        run.noise_rng.manual_seed(seed + 2)
        self.resume_note = (f"saved by {len(ranks)} process(es), resumed on {run.world.size}: the data and noise "
                            "streams start afresh, so the run is not bit-identical to an uninterrupted one")
