"""Multi-process training (training/distributed.py) on CPU with Gloo: averaged gradients equal the
full-batch gradient, and `torchrun ... gankit train` trains, logs once, saves every process's random
state and resumes exactly."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gankit import config
from gankit.errors import UserError
from gankit.losses import GANLoss
from gankit.models import MODELS
from gankit.presets import load_preset
from gankit.training import distributed
from gankit.training.trainer import per_process_batch
from tests.conftest import TINY


def _gradients_worker(rank: int, init_file: str, out_file: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    cfg = config.with_overrides(load_preset("quadratic"), ["loss.r1_gamma=10"])  # R1: a double backward
    torch.manual_seed(0)
    _, d = MODELS.get("mlp")(cfg.model, (2,), 0)
    real, fake = torch.randn(64, 2, generator=torch.Generator().manual_seed(1)), torch.randn(64, 2)
    loss = GANLoss(cfg.loss)
    halves = slice(32 * rank, 32 * (rank + 1))
    loss.d_loss(d, real[halves], fake[halves], 0)[0].backward()
    distributed.average_gradients(d.parameters(), 2)
    averaged = [p.grad.clone() for p in d.parameters()]
    if rank == 0:
        d.zero_grad()
        loss.d_loss(d, real, fake, 0)[0].backward()
        torch.save({"averaged": averaged, "full": [p.grad.clone() for p in d.parameters()]}, out_file)
    dist.destroy_process_group()


def test_averaged_half_batch_gradients_equal_the_full_batch_gradient(tmp_path):
    out = tmp_path / "grads.pt"
    mp.spawn(_gradients_worker, args=(str(tmp_path / "init"), str(out)), nprocs=2, join=True)
    grads = torch.load(out)
    for averaged, full in zip(grads["averaged"], grads["full"]):
        torch.testing.assert_close(averaged, full, rtol=1e-5, atol=1e-6)


def test_the_batch_must_split_evenly_over_the_processes():
    assert per_process_batch(256, 2) == 128
    with pytest.raises(UserError, match="multiple of 3"):
        per_process_batch(256, 3)


def _torchrun(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONFAULTHANDLER": "1"}  # two processes on two cores
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "gankit.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _sets(*extra: str) -> list[str]:
    return [a for item in [*TINY, "train.snapshot_every=0", *extra] for a in ("--set", item)]


def test_torchrun_trains_logs_once_and_resumes_exactly(tmp_path):
    straight, split = tmp_path / "straight", tmp_path / "split"
    done = _torchrun("train", "quadratic", "--out", str(straight), "--quiet", "--no-plots", *_sets())
    assert done.returncode == 0, done.stderr
    assert "x 2 processes" in done.stderr and done.stdout.count("Done:") == 1  # process 0 alone reports
    rows = [json.loads(line) for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [5, 10, 15, 20]  # one line a log step, no drift warning
    state = torch.load(straight / "checkpoints" / "latest.pt", weights_only=False)
    assert len(state["rng_ranks"]) == 2
    assert not torch.equal(state["rng_ranks"][0]["data"], state["rng_ranks"][1]["data"])  # own batches

    for args in (("train", "quadratic", "--out", str(split), "--steps", "10", *_sets()), ("resume", str(split), "--steps", "20")):
        done = _torchrun(*args, "--quiet", "--no-plots")
        assert done.returncode == 0, done.stderr
    resumed = torch.load(split / "checkpoints" / "latest.pt", weights_only=False)
    for key in state["g"]:
        assert torch.equal(state["g"][key], resumed["g"][key]), key


def test_a_run_of_two_processes_resumes_on_one_and_says_it_is_not_exact(tmp_path):
    run = tmp_path / "run"
    done = _torchrun("train", "quadratic", "--out", str(run), "--steps", "10", "--quiet", "--no-plots", *_sets())
    assert done.returncode == 0, done.stderr
    from gankit.cli import main

    assert main(["resume", str(run), "--steps", "20", "--quiet", "--no-plots"]) == 0
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "event" in line]
    assert [e["kind"] for e in events] == ["resume_processes"]


def test_a_held_run_refuses_every_process_at_once(tmp_path):
    """Under torchrun, process 0 holds the run; its refusal reaches the others (no process waits forever)."""
    run = tmp_path / "run"
    from gankit.cli import main

    # the run is made in this process: only the refusals need torchrun (each launch costs seconds)
    assert main(["train", "quadratic", "--out", str(run), "--steps", "10", "--quiet", "--no-plots", *_sets()]) == 0
    code = ("import sys, time; from gankit.rundir import hold_run\n"
            "with hold_run(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (("resume", str(run), "--steps", "20"), ("train", "quadratic", "--out", str(run), "--overwrite",
                                                             *_sets())):
            done = _torchrun(*args, "--quiet", "--no-plots")  # timeout=300: a hang fails the test
            assert done.returncode != 0 and f"in use by process {holder.pid}" in done.stderr
    finally:
        holder.kill()
        holder.wait()


def test_two_processes_stop_together_on_a_time_budget(tmp_path):
    """Process 0's clock decides at a log step; every process stops at that step and the run saves it."""
    run = tmp_path / "run"
    done = _torchrun("train", "quadratic", "--out", str(run), "--steps", "100000", "--max-minutes", "0.00002",
                     "--quiet", "--no-plots", *_sets())
    assert done.returncode == 0, done.stderr
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=False)
    assert state["step"] == 5  # the first log step (train.log_every = 5 in TINY)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if "event" in line]
    assert [(e["event"], e["step"]) for e in events] == [("time_budget", 5)]
