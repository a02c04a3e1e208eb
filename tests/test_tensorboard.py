"""train.tensorboard: TensorBoard's own event reader finds the run's scalars, images and config."""
from __future__ import annotations

import builtins
import json

import numpy as np
import pytest

from gankit.cli import main

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="needs the tensorboard package (pip install tensorboard)")


def read(folder):
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_a_vector_run_mirrors_every_scalar_of_metrics_jsonl(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "quadratic", "--steps", "40", "--out", str(run), "--quiet", "--no-plots",
                 "--set", "train.tensorboard=true", "--set", "train.log_every=10", "--set", "eval.every=20",
                 "--set", "eval.n=200", "--set", "eval.metrics=curve"]) == 0
    acc = read(run / "tensorboard")
    tags = set(acc.Tags()["scalars"])
    assert {"d_loss", "g_loss", "d_real", "d_fake", "curve_error", "ks_x"} <= tags
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [(r["step"], r["d_loss"]) for r in rows if "d_loss" in r]
    seen = [(e.step, e.value) for e in acc.Scalars("d_loss")]
    assert [s for s, _ in seen] == [s for s, _ in logged] == [10, 20, 30, 40]
    np.testing.assert_allclose([v for _, v in seen], [v for _, v in logged], rtol=1e-6)
    assert "config" in " ".join(acc.Tags()["tensors"])  # add_text is stored as a tensor summary


def test_an_image_run_adds_its_sample_grids(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "imgs.npz", images=(rng.random((64, 28, 28)) * 255).astype(np.uint8))
    run = tmp_path / "run"
    assert main(["train", "mnist-dcgan", "--steps", "4", "--out", str(run), "--quiet", "--no-plots",
                 "--set", f"data.name=images:{tmp_path / 'imgs.npz'}", "--set", "train.batch_size=8",
                 "--set", "model.conv_width=4", "--set", "train.snapshot_every=2", "--set", "train.log_every=2",
                 "--set", "train.tensorboard=true"]) == 0
    acc = read(run / "tensorboard")
    assert "g_loss" in acc.Tags()["scalars"]
    steps = sorted({e.step for tag in acc.Tags()["images"] for e in acc.Images(tag)})
    assert steps == [1, 2, 4]


def test_without_the_package_the_flag_is_one_clear_error(tmp_path, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name == "tensorboard" or name.startswith("tensorboard."):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert main(["train", "quadratic", "--steps", "5", "--out", str(tmp_path / "run"),
                 "--set", "train.tensorboard=true"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install tensorboard" in err[0]
    assert not (tmp_path / "run").exists()


def test_a_resumed_run_shows_each_step_once(tmp_path):
    run = tmp_path / "run"
    sets = ["--quiet", "--no-plots", "--set", "train.tensorboard=true", "--set", "train.log_every=5",
            "--set", "train.checkpoint_every=10"]
    assert main(["train", "quadratic", "--steps", "20", "--out", str(run), *sets]) == 0
    assert main(["resume", str(run / "checkpoints" / "step-000010.pt"), "--steps", "25", "--quiet", "--no-plots"]) == 0
    steps = [e.step for e in read(run / "tensorboard").Scalars("d_loss")]
    assert steps == [5, 10, 15, 20, 25]  # the abandoned 15 and 20 dropped, the new ones kept once
