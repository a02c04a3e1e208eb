"""What keeps a run safe: the divergence guard (a NaN or infinity rolls the run back to its newest
finite checkpoint with lower learning rates, or stops it with a diagnosis), the health warnings of a
log step, stop signals (Ctrl-C and SIGTERM finish the step, save and exit), the time budget
(train.max_minutes), and the check that every process of a multi-process run holds the same weights."""
from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

from gankit.errors import TrainingError, UserError
from gankit.training import checkpoint as ckpt
from gankit.training import distributed
from gankit.training.health import nonfinite_parts

if TYPE_CHECKING:
    from gankit.training.trainer import Trainer


class Guards:
    def __init__(self, run: "Trainer"):
        self.run = run
        self.stop_signal: int | None = None
        self.stop_agreed = False  # several processes: every one of them stops after this step
        self.time_up = False  # train.max_minutes is spent: the step just begun is the last

    # ------------------------------------------------------------------ divergence
    def nonfinite_state(self) -> list[str]:
        """What of the training state (networks, EMA, optimisers) holds a NaN or an infinity."""
        run = self.run
        return nonfinite_parts({"g": run.g.state_dict(), "d": run.d.state_dict(),
                                "ema": run.ema.state_dict() if run.ema is not None else None,
                                "sampler_buffers": run.store.sampler_buffers(),
                                "opt_g": run.opt_g.state_dict(), "opt_d": run.opt_d.state_dict()})

    def on_nonfinite(self, bad: list[str]) -> None:
        """Roll back to the newest checkpoint with finite weights, with lower learning rates, or stop
        with a diagnosis."""
        run, t = self.run, self.run.cfg.train
        where = f"non-finite {', '.join(bad)} at step {run.step}"
        if t.on_nonfinite == "stop" or run._rollbacks >= t.nonfinite_retries:
            run.log.event("diverged", message=where)
            raise TrainingError(f"{where} (after {run._rollbacks} rollbacks); lower the learning rates "
                                "(--set optim_d.lr=... optim_g.lr=...), or try model.spectral_norm=true or "
                                f"loss.name=hinge; the checkpoints in {run.run_dir / 'checkpoints'} hold only "
                                "finite weights")
        rollbacks = run._rollbacks + 1
        run.load_state_dict(self.newest_finite_checkpoint(where))
        run._rollbacks, run._lr_scale = rollbacks, t.nonfinite_lr_factor ** rollbacks
        run.set_learning_rates(run.step)
        run.log.truncate(run.step)
        run.store.set_aside_later_checkpoints()  # any poisoned ones: a resume must not start from them
        run.log.event("rollback", message=f"{where}; back to step {run.step} with learning rates x{run._lr_scale:g}")
        run.log.rewind(run.step)

    def newest_finite_checkpoint(self, where: str) -> dict[str, Any]:
        """The newest readable checkpoint whose weights and optimiser states are all finite (runs saved
        by older gankit versions may hold a poisoned one)."""
        run = self.run
        for file in reversed(ckpt.step_files(run.run_dir / "checkpoints")):
            try:
                state = ckpt.load_checkpoint(file, map_location=run.device)
            except UserError:
                continue  # damaged: try the one before
            if not nonfinite_parts(state):
                return state
        raise TrainingError(f"{where}, and no checkpoint of {run.run_dir} holds finite weights to roll back to; "
                            "start again with lower learning rates")

    # ------------------------------------------------------------------ before training
    def warn_before_training(self) -> None:
        run = self.run
        if run.store.resume_note:
            run.log.event("warning", kind="resume_processes", message=run.store.resume_note)
            run.store.resume_note = None
        if not getattr(run, "denormals_flushed", True):  # set by fit() for its run
            run.log.event("warning", kind="denormals", message="train.flush_denormals: this CPU or PyTorch build "
                          "did not let gankit flush denormal floats on every thread, so a long run may slow down; "
                          "set train.flush_denormals=false to silence this")
        size = len(run.source) if hasattr(run.source, "__len__") else None
        if run.step == 0 and size is not None and size < run.cfg.train.batch_size:
            run.log.event("warning", kind="small_data", message=f"the data set has {size} samples, fewer than "
                          f"train.batch_size = {run.cfg.train.batch_size}: every batch repeats samples, and G "
                          "can learn the points themselves; more data, or a smaller batch, helps")

    # ------------------------------------------------------------------ several processes
    def check_processes_in_step(self) -> None:
        """Averaged gradients keep every process's networks identical; say so loudly if they are not."""
        run = self.run
        if not run.world.active:
            return
        drift = max(distributed.max_difference(run.g, run.device), distributed.max_difference(run.d, run.device))
        if drift > 0:
            run.log.event("warning", kind="process_drift",
                          message=f"the processes' weights differ by up to {drift:.3g}; process 0's are saved")

    def agree_on_stop(self) -> None:
        """At a log step of a multi-process run: a signal any process got stops them all after this step."""
        run = self.run
        if distributed.any_process(self.stop_signal is not None, run.device):
            self.stop_signal = self.stop_signal or signal.SIGTERM
            self.stop_agreed = True

    def warn_of_health(self, row: dict[str, Any]) -> None:
        """A log step's warnings: collapse and the like (health.py), and a CPU run starved of CPU time."""
        run = self.run
        for kind, message in run.health.check(row):
            run.log.event("warning", kind=kind, message=message)
        # one CPU process: several wait for each other at every gradient exchange, by design
        busy = run.cpu_share.check() if run.device.type == "cpu" and not run.world.active else None
        if busy:
            run.log.event("warning", kind="busy_machine", message=busy)

    def check_time_budget(self) -> bool:
        """Whether the run has trained train.max_minutes in all (resumes included), kept in time_up.
        Every process asks at the same steps (the start and each log step's), and process 0's clock
        answers for all."""
        run = self.run
        budget = run.cfg.train.max_minutes * 60
        spent = budget > 0 and run.elapsed >= budget
        if budget > 0 and run.world.active:
            spent = distributed.from_main(spent)
        self.time_up = spent
        return spent

    # ------------------------------------------------------------------ interruption
    def stopping(self) -> bool:
        """A stop signal ends a one-process run after this step; several processes agree on one
        step first, at the next log step (agree_on_stop)."""
        return self.stop_signal is not None and (not self.run.world.active or self.stop_agreed)

    @contextmanager
    def stop_signals(self) -> Iterator[None]:
        """Ctrl-C / SIGTERM: finish the step, checkpoint, then exit with the usual status."""
        def remember(signum, _frame):
            self.stop_signal = signum

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

    def exit_on_signal(self) -> None:
        run = self.run
        name = signal.Signals(self.stop_signal).name
        if run.world.is_main:
            print(f"\ngankit: {name} received; checkpoint saved at step {run.step}. "
                  f"Continue with: gankit resume {run.run_dir}", file=sys.stderr)
        raise SystemExit(128 + int(self.stop_signal))
