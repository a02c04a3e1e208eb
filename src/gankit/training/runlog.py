"""A run's record as it trains: metrics.jsonl (the run's own log), the progress bar, a stderr line
for each event, and the TensorBoard mirror when train.tensorboard asks for it. Process 0 writes;
the other processes of a multi-process run keep quiet."""
from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from gankit import config as config_mod
from gankit.io import atomic_write_text
from gankit.training import tensorboard

if TYPE_CHECKING:
    from gankit.training.trainer import Trainer


class RunLog:
    def __init__(self, run: "Trainer"):
        self.run = run
        self.bar: tqdm | None = None
        self.tensorboard: tensorboard.TensorBoardLog | None = None  # open while fit() runs
        self._precision_noted = False

    def open(self, total: int, progress: bool) -> None:
        run = self.run
        self.note_precision(progress)
        self.bar = tqdm(total=total, initial=run.step, desc="train", unit="step", file=sys.stderr,
                        disable=not (progress and run.world.is_main), dynamic_ncols=True, mininterval=0.5)
        if run.cfg.train.tensorboard and run.world.is_main and self.tensorboard is None:
            self.tensorboard = tensorboard.TensorBoardLog(run.run_dir, config_mod.dumps(run.cfg), run.step)

    def note_precision(self, progress: bool) -> None:
        """What the CPU probe measured for train.precision = auto, and why gankit's Adam kernel is not
        in use where it would be, in metrics.jsonl and on stderr, once."""
        if self._precision_noted:
            return
        self._precision_noted = True
        choice = self.run.precision_choice
        if choice.speedup is not None:
            self._note({"event": "precision", "precision": choice.name, "bf16_speedup": round(choice.speedup, 3),
                        "message": choice.note()}, progress)
        if choice.name == "fp16" and self.run.device.type == "cpu":
            note = ("train.precision = fp16 on a CPU: float16 arithmetic is emulated there (the MLP GAN's step ran "
                    "about 20x slower than in fp32); fp16 is for GPUs without bfloat16 (compute capability 7). "
                    "On a CPU use auto or fp32")
            # once in the run's log; a resume says it again on stderr only
            self._note({"event": "precision", "precision": choice.name, "message": note}, progress,
                       logged=self.run.step == 0)
        kernel_note = self.run.precision.kernel_note
        if kernel_note is not None:
            self._note({"event": "adam_kernel", "message": kernel_note}, progress)

    def _note(self, row: dict[str, Any], progress: bool, logged: bool = True) -> None:
        """A set-up note: a row of metrics.jsonl at this step (where `logged`), its message on stderr."""
        if logged:
            self.append({"step": self.run.step, **row})
        if progress and self.run.world.is_main:
            self.say(f"gankit: {row['message']}")

    def close_bar(self) -> None:
        """Training is over (a rejection critic may show its own bar next)."""
        if self.bar is not None:
            self.bar.close()

    def close(self) -> None:
        self.close_bar()
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = None

    def append(self, row: dict[str, Any]) -> None:
        """One line of metrics.jsonl (and its numbers in TensorBoard)."""
        if not self.run.world.is_main:
            return
        with open(self.run.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        if self.tensorboard is not None:
            self.tensorboard.row(row)

    def event(self, event: str, **fields: Any) -> None:
        """A line in metrics.jsonl (the run's record) and on stderr."""
        self.append({"step": self.run.step, "event": event, **fields})
        if self.run.world.is_main:
            tqdm.write(f"gankit: {event} at step {self.run.step}: {fields.get('message', '')}", file=sys.stderr)

    def time_budget_reached(self, total: int) -> None:
        """train.max_minutes ended training before train.steps: in the run's record and on stderr."""
        run = self.run
        minutes = run.cfg.train.max_minutes
        self.event("time_budget", seconds=round(run.elapsed, 3), max_minutes=minutes, steps=total,
                   message=f"train.max_minutes = {minutes:g} reached after {run.elapsed:.1f} s of training; "
                           f"stopped at step {run.step} of {total} (gankit resume RUN --max-minutes M "
                           "gives it more time)")

    def say(self, text: str) -> None:
        """A line on stderr that does not break the progress bar."""
        tqdm.write(text, file=sys.stderr)

    def training_row(self, stats: dict[str, torch.Tensor]) -> dict[str, Any]:
        """A log step's row: the step's statistics, the time, and for images epochs and images/s;
        written to metrics.jsonl and shown on the progress bar."""
        run = self.run
        row: dict[str, Any] = {"step": run.step}
        row.update({k: round(float(v), 6) for k, v in stats.items()})
        if run.cfg.loss.instance_noise > 0:
            row["noise_std"] = run.loss.noise_std(run.step)
        if run.cfg.loss.mode_seeking > 0 and run.cfg.loss.mode_seeking_anneal > 0:  # g_loss falls with it
            row["mode_seeking_weight"] = run.loss.mode_seeking_weight(run.step)
        row["seconds"] = round(run.elapsed, 3)
        if "d_loss" not in row:  # one of the first steps, Q's sorting alone (loss.info_real_first)
            postfix = {"sorting MI": f"{row['info_real']:.3f}"}
        else:
            postfix = {"D": f"{row['d_loss']:.3f}", "G": f"{row['g_loss']:.3f}"}
        if "d_real" in row:
            postfix.update({"D(x)": f"{row['d_real']:.2f}", "D(G(z))": f"{row['d_fake']:.2f}"})
        elif "critic_real" in row:  # a critic's raw values (wgan-gp, hinge, lsgan): no probabilities
            postfix.update({"C(x)": f"{row['critic_real']:.2f}", "C(G(z))": f"{row['critic_fake']:.2f}"})
        if run.is_image:
            t = run.cfg.train
            from gankit.training.trainer import sorting_steps  # here: the trainer imports this module

            sorted_first = min(run.step, sorting_steps(run))  # one batch each (loss.info_real_first)
            seen = t.batch_size * ((run.step - sorted_first) * (1 if t.reuse_batch else t.n_d) + sorted_first)
            row["epoch"] = round(seen / len(run.source), 4)
            row["images_per_s"] = round(seen / max(run.elapsed, 1e-9), 1)
            postfix = {"epoch": f"{row['epoch']:.2f}", **postfix, "img/s": f"{row['images_per_s']:.0f}"}
        self.append(row)
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
        return row

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def rewind(self, step: int) -> None:
        """After a rollback: the bar shows the step training continues from, and TensorBoard drops the
        abandoned stretch (as metrics.jsonl did)."""
        if self.bar is not None:
            self.bar.n = step
            self.bar.refresh()
        if self.tensorboard is not None:
            self.tensorboard.close()
            self.tensorboard = tensorboard.TensorBoardLog(self.run.run_dir, config_mod.dumps(self.run.cfg), step)

    def truncate(self, step: int) -> None:
        """Drop log lines written after `step` (on resume or rollback): no duplicates, no gaps."""
        path = self.run.run_dir / "metrics.jsonl"
        if not path.exists() or not self.run.world.is_main:
            return
        kept = [line for line in path.read_text(encoding="utf-8").splitlines()
                if line.strip() and _line_step(line) <= step]
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def _line_step(line: str) -> int:
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return sys.maxsize  # an unreadable (half-written) line is dropped
