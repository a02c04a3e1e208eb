"""Runs that survive: guards against divergence, failed writes, signals, kills and corrupt files."""
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from gankit import config
from gankit.cli import main
from gankit.errors import TrainingError, UserError
from gankit.training import Trainer
from gankit.training import checkpoint as ckpt
from gankit.training.health import HealthMonitor
from tests.conftest import TINY

SETS = [arg for item in TINY for arg in ("--set", item)]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def poison_d_loss_at(trainer, bad_steps):
    """Make the D loss NaN at the given steps (once each), as a diverging run would."""
    original = trainer.loss.d_loss
    pending = set(bad_steps)

    def d_loss(d, real, fake, step, generator=None, labels=None):
        loss, stats = original(d, real, fake, step, generator, labels)
        if step in pending:
            pending.discard(step)
            loss = loss * float("nan")
        return loss, stats

    trainer.loss.d_loss = d_loss


def test_nan_rolls_back_with_lower_learning_rates(tiny_cfg, tmp_path):
    trainer = Trainer(tiny_cfg, tmp_path)
    poison_d_loss_at(trainer, {13})
    trainer.fit(progress=False)
    rows = lines(tmp_path)
    rollback = [r for r in rows if r.get("event") == "rollback"]
    assert len(rollback) == 1 and rollback[0]["step"] == 10
    assert trainer.step == 20 and all(torch.isfinite(p).all() for p in trainer.g.parameters())
    assert trainer.opt_d.param_groups[0]["lr"] == pytest.approx(tiny_cfg.optim_d.lr * 0.5)
    steps = [r["step"] for r in rows if "d_loss" in r]
    assert steps == [5, 10, 15, 20]  # the poisoned stretch is gone from the log


def test_nan_stops_with_a_diagnosis_when_asked(tiny_cfg, tmp_path):
    trainer = Trainer(config.replace(tiny_cfg, "train", on_nonfinite="stop"), tmp_path)
    poison_d_loss_at(trainer, {7})
    with pytest.raises(TrainingError, match="non-finite d_loss.* at step 10"):
        trainer.fit(progress=False)
    assert lines(tmp_path)[-1]["event"] == "diverged"
    assert ckpt.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 0


def test_failed_checkpoint_write_keeps_the_previous_one(tiny_cfg, tmp_path, monkeypatch):
    trainer = Trainer(config.replace(tiny_cfg, "train", steps=30), tmp_path)
    trainer.fit(steps=10, progress=False)
    real_save = torch.save

    def full_disk(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.torch, "save", full_disk)
    with pytest.raises(TrainingError, match="could not be written"):
        trainer.fit(steps=30, progress=False)
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert ckpt.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 10
    assert not list((tmp_path / "checkpoints").glob(".*.tmp"))
    events = [r for r in lines(tmp_path) if r.get("event") == "checkpoint_failed"]
    assert events and "No space left" in events[0]["message"]
    assert main(["resume", str(tmp_path), "--quiet", "--no-plots"]) == 0


def test_health_monitor_warns_when_d_has_won_and_on_collapse():
    monitor = HealthMonitor(patience=3)
    won = {"d_real": 0.999, "d_fake": 0.001}
    assert [monitor.check(won) for _ in range(2)] == [[], []]
    assert [kind for kind, _ in monitor.check(won)] == ["d_wins"]
    assert monitor.check(won) == []  # once per episode
    assert [kind for kind, _ in monitor.check({"diversity": 1.0})] == []
    assert [kind for kind, _ in monitor.check({"diversity": 0.1})] == ["collapse"]


def test_diversity_is_logged(tiny_cfg, tmp_path):
    Trainer(tiny_cfg, tmp_path).fit(progress=False)
    assert all(r["diversity"] > 0 for r in lines(tmp_path) if "d_loss" in r)


def start_training(tmp_path, steps=100000, keep=3):
    return subprocess.Popen([sys.executable, "-m", "gankit.cli", "train", "quadratic", "--out", str(tmp_path / "run"),
                             "--quiet", "--no-plots", *SETS, "--steps", str(steps),
                             "--set", "train.checkpoint_every=3", "--set", "train.snapshot_every=0",
                             "--set", f"train.keep_checkpoints={keep}"],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path, proc, timeout=60):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.parametrize("sig,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_stop_signal_saves_a_checkpoint_and_says_how_to_resume(tmp_path, sig, status):
    proc = start_training(tmp_path, keep=100000)  # step 3's file must stay for the wait below to see it
    wait_for(tmp_path / "run" / "checkpoints" / "step-000003.pt", proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == status
    assert "gankit resume" in err
    step = ckpt.load_checkpoint(tmp_path / "run" / "checkpoints" / "latest.pt")["step"]
    assert step >= 3 and f"checkpoint saved at step {step}." in err


def test_sigkill_at_random_moments_always_resumes(tmp_path):
    rng = random.Random(1234)
    for trial in range(4):
        folder = tmp_path / f"t{trial}"
        proc = start_training(folder)
        wait_for(folder / "run" / "checkpoints" / "latest.pt", proc)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.kill()
        proc.wait()
        done = main(["resume", str(folder / "run"), "--steps", str(_last_step(folder / "run") + 6),
                     "--quiet", "--no-plots"])
        assert done == 0, f"trial {trial}"
        steps = [r["step"] for r in lines(folder / "run") if "d_loss" in r]
        assert steps == sorted(set(steps)), "no duplicated or out-of-order log lines"


def _last_step(run_dir):
    return ckpt.load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"]


def test_checkpoint_with_foreign_weights_is_a_clear_error(tiny_cfg, tmp_path):
    Trainer(tiny_cfg, tmp_path).fit(progress=False)
    state = ckpt.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    state["g"] = {"net.0.weight": torch.zeros(3, 3)}
    state.pop("checksum")
    ckpt.save_checkpoint(state, tmp_path / "other", 1, keep=1)
    with pytest.raises(UserError, match="does not match the networks"):
        from gankit.api import GAN

        GAN.load(tmp_path / "other" / "latest.pt")


def test_checkpoint_of_another_format_is_refused(tiny_cfg, tmp_path):
    Trainer(tiny_cfg, tmp_path).fit(progress=False)
    state = ckpt.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    ckpt.atomic_save({**state, "format": 99}, tmp_path / "future.pt")
    with pytest.raises(UserError, match="format 99"):
        ckpt.load_checkpoint(tmp_path / "future.pt")


def test_a_flipped_weight_byte_is_caught_by_the_checksum(tiny_cfg, tmp_path):
    Trainer(tiny_cfg, tmp_path).fit(progress=False)
    state = ckpt.load_checkpoint(tmp_path / "checkpoints" / "latest.pt")
    state["g"]["net.0.weight"][0, 0] += 1.0  # what a flipped bit in the tensor data amounts to
    torch.save(state, tmp_path / "flipped.pt")  # keeps the old checksum
    with pytest.raises(UserError, match="checksum"):
        ckpt.load_checkpoint(tmp_path / "flipped.pt")
