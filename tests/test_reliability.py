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
from gankit.training.health import HealthMonitor, batch_diversity
from tests.conftest import TINY

SETS = [arg for item in TINY for arg in ("--set", item)]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def lines(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def poison_d_loss_at(trainer, bad_steps):
    """Make the D loss NaN at the given steps (once each), as a diverging run would."""
    original = trainer.loss.d_loss
    pending = set(bad_steps)

    def d_loss(d, real, fake, step, generator=None, labels=None, **kwargs):
        loss, stats = original(d, real, fake, step, generator, labels, **kwargs)
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
    assert [kind for kind, _ in monitor.check({"diversity": 0.1})] == []  # the first lines only settle the peak
    assert [monitor.check({"diversity": 1.0}) for _ in range(monitor.settle)] == [[]] * monitor.settle
    assert [kind for kind, _ in monitor.check({"diversity": 0.1})] == ["collapse"]
    assert monitor.check({"diversity": 0.4}) == monitor.check({"diversity": 0.1}) == []  # still the same fall
    monitor.check({"diversity": 0.9})
    assert [kind for kind, _ in monitor.check({"diversity": 0.1})] == ["collapse"]  # a new fall


def test_diversity_within_categories_sees_one_image_per_category():
    real = torch.randn(120, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    groups = torch.arange(120) % 10
    one_each = torch.randn(10, 1, 4, 4)[groups]  # spread across categories, none within one
    varied = batch_diversity(real[torch.randperm(120)], real, groups)
    collapsed = batch_diversity(one_each, real, groups)
    assert 0.8 < float(varied["diversity_within"]) < 1.2 and 0.8 < float(collapsed["diversity"]) < 1.2
    assert float(collapsed["diversity_within"]) < 1e-5
    assert "diversity_within" not in batch_diversity(real, real)
    monitor = HealthMonitor(settle=1)
    assert monitor.check({"diversity": 1.0, "diversity_within": 0.9}) == []
    warned = monitor.check({"diversity": 1.0, "diversity_within": 0.05})
    assert [kind for kind, _ in warned] == ["collapse"] and "within categories" in warned[0][1]


def test_diversity_within_is_left_out_where_it_would_mislead_or_be_nan():
    from gankit.config import ModelConfig
    from gankit.models.noise import sample_noise
    from gankit.training.trainer import diversity_groups

    m = ModelConfig(z_dim=3, z_categories=10)
    z = sample_noise(11, m, torch.Generator().manual_seed(0))
    assert torch.equal(diversity_groups(m, z, None, 0, is_image=True), z[:, 3:].argmax(1))
    assert diversity_groups(m, z, None, 0, is_image=False) is None  # a mixture's category is one tight mode
    assert diversity_groups(m, z[:10], None, 0, is_image=True) is None  # 10 samples, 10 categories: maybe no pair
    labels = torch.arange(11) % 10
    assert diversity_groups(ModelConfig(z_dim=3), z[:, :3], labels, 10, is_image=True) is labels


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


# --------------------------------------------------------------------------- poisoned states, rollback state

def poison_g_weights_after_step(trainer, step):
    """After the G update that makes step `step`, put a NaN in G's weights (once): the losses logged
    before were finite, as with a non-finite gradient in the last update."""
    original, pending = trainer.opt_g.step, [step]

    def step_then_poison(*args, **kwargs):
        out = original(*args, **kwargs)
        if trainer.step + 1 in pending:  # once: the retried stretch trains normally
            pending.clear()
            with torch.no_grad():
                next(trainer.g.parameters()).view(-1)[0] = float("nan")
        return out

    trainer.opt_g.step = step_then_poison


def all_checkpoints_finite(run_dir) -> bool:
    from gankit.training.health import nonfinite_parts

    return all(not nonfinite_parts(ckpt.load_checkpoint(f)) for f in ckpt.step_files(run_dir / "checkpoints"))


def test_nonfinite_weights_are_never_saved(tiny_cfg, tmp_path):
    cfg = config.with_overrides(tiny_cfg, ["train.log_every=3"])  # step 10 saves but does not log
    trainer = Trainer(cfg, tmp_path)
    poison_g_weights_after_step(trainer, 10)
    trainer.fit(progress=False)
    rollback = [r for r in lines(tmp_path) if r.get("event") == "rollback"]
    assert len(rollback) == 1 and "weights of G" in rollback[0]["message"] and rollback[0]["step"] == 0
    assert trainer.step == 20 and all_checkpoints_finite(tmp_path)


def test_rollback_passes_over_a_poisoned_checkpoint(tiny_cfg, tmp_path):
    """A run saved by an older gankit can hold a checkpoint with NaN weights: rollback skips it."""
    trainer = Trainer(tiny_cfg, tmp_path).fit(progress=False)
    state = trainer.state_dict()
    next(iter(state["g"].values())).view(-1)[0] = float("nan")
    ckpt.save_checkpoint(state, tmp_path / "checkpoints", 20, keep=3)  # step 20, poisoned
    resumed = Trainer.resume(tmp_path).fit(25, progress=False)  # NaN losses: roll back past step 20
    rollbacks = [r for r in lines(tmp_path) if r.get("event") == "rollback"]
    assert len(rollbacks) == 1 and "back to step 10" in rollbacks[0]["message"]
    assert resumed.step == 25 and not resumed.guards.nonfinite_state()
    assert (tmp_path / "checkpoints" / "abandoned" / "step-000020.pt").is_file()  # set aside, not resumed from


def test_rollback_state_is_kept_by_checkpoints(tiny_cfg, tmp_path):
    trainer = Trainer(tiny_cfg, tmp_path)
    poison_d_loss_at(trainer, {13})
    trainer.fit(progress=False)
    resumed = Trainer.resume(tmp_path)
    assert (resumed._rollbacks, resumed._lr_scale) == (1, 0.5)  # not a fresh budget at the full rate
    poison_d_loss_at(resumed, {23})
    resumed.fit(30, progress=False)
    rollbacks = [r for r in lines(tmp_path) if r.get("event") == "rollback"]
    assert "x0.25" in rollbacks[-1]["message"]  # the second rollback of the run, not a first one again
    assert resumed.opt_g.param_groups[0]["lr"] == pytest.approx(tiny_cfg.optim_g.lr * 0.25)


def test_a_longer_resume_holds_the_schedules_final_rate(tiny_cfg, tmp_path, capsys):
    cfg = config.with_overrides(tiny_cfg, ["train.lr_schedule=linear", "train.lr_final=0.1"])
    Trainer(cfg, tmp_path).fit(progress=False)
    resumed = Trainer.resume(tmp_path)
    resumed.cfg = config.replace(resumed.cfg, "train", steps=40)  # as `gankit resume RUN --steps 40`
    rates = []
    resumed.opt_g.register_step_pre_hook(lambda opt, *_: rates.append(opt.param_groups[0]["lr"]))
    resumed.fit(40, progress=False)
    assert len(rates) == 20 and rates == pytest.approx([cfg.optim_g.lr * 0.1] * 20)


def test_a_run_starved_of_cpu_says_so(monkeypatch):
    from gankit.training import health

    clock = {"wall": 0.0, "cpu": 0.0}
    monkeypatch.setattr(health.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(health.time, "process_time", lambda: clock["cpu"])
    share = health.CpuShare(threads=2)

    def step(wall: float, cpu: float) -> None:  # one timed training stretch
        share.begin()
        clock["wall"] += wall
        clock["cpu"] += cpu
        share.end()

    step(10.0, 3.0)
    assert share.check() is None  # the first stretch is warm-up, whatever it got
    step(10.0, 19.0)  # 2 threads, 10 s: 19 s of CPU time, nearly all they could use
    clock["wall"] += 60.0  # an evaluation or a checkpoint write between steps: not counted
    assert share.check() is None
    step(10.0, 9.0)  # the next 10 s: 9 s of CPU time, the cores went to others
    message = share.check()
    assert message and "45%" in message and "train.threads" in message
    step(10.0, 1.0)
    assert share.check() is None  # said once


def test_threads_default_to_one_for_vectors_and_are_restored(tiny_cfg, tmp_path):
    before = torch.get_num_threads()
    trainer = Trainer(tiny_cfg, tmp_path)
    seen = []
    trainer.opt_g.register_step_pre_hook(lambda *_: seen.append(torch.get_num_threads()))
    trainer.fit(progress=False)
    assert set(seen) == {1} and torch.get_num_threads() == before
    assert Trainer(config.with_overrides(tiny_cfg, ["train.threads=3"]), "unused").threads == 3


def test_an_earlier_versions_optimiser_state_resumes_on_channels_last_weights(tiny_cfg, tmp_path):
    """Earlier versions saved Adam's moments contiguous; the DCGAN's weights are channels-last now, and
    CPU fused Adam assumes both alike: loading lays the moments out like the weights."""
    import copy

    import numpy as np

    from gankit.data.images import ImageSource

    images = ImageSource(np.random.default_rng(0).integers(0, 255, (64, 1, 28, 28), dtype=np.uint8), None, "noise")
    cfg = config.with_overrides(tiny_cfg, ["model.name=dcgan", "model.conv_width=4", "model.z_dim=8",
                                           "model.g_output=tanh", "train.precision=fp32"])
    trainer = Trainer(cfg, tmp_path, source=images)
    for _ in range(2):
        trainer.train_step()
    state = trainer.state_dict()
    old = {**state, "opt_d": {**state["opt_d"], "state": {
        i: {k: v.contiguous() if torch.is_tensor(v) and v.dim() == 4 else v for k, v in s.items()}
        for i, s in state["opt_d"]["state"].items()}}}
    results = []
    for saved in (state, old):
        resumed = Trainer(cfg, tmp_path, source=images)
        resumed.load_state_dict(copy.deepcopy(saved))  # as read from disk: nothing shared between the two
        resumed.train_step()
        results.append([p.detach().clone() for p in resumed.d.parameters()])
    for a, b in zip(*results):
        assert torch.equal(a, b)
