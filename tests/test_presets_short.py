"""Every preset as a new user tries it first: `gankit train PRESET --steps 300` ends with status 0,
a final checkpoint at step 300, the logged curves, and the pictures it lists (image presets given
their data: the MNIST test set from ../shared, a generated folder of images, generated points)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gankit.cli import main
from gankit.presets import preset_names
from gankit.training import checkpoint as ckpt
from tests.conftest import SHARED_MNIST, needs_shared_mnist


def data_settings(preset: str, tmp_path) -> list[str]:
    if preset.startswith(("mnist", "seed-mnist")):
        return ["--set", f"data.root={SHARED_MNIST}", "--set", "data.split=test"]
    if preset == "folder-dcgan":
        folder = tmp_path / "photos"
        folder.mkdir()
        rng = np.random.default_rng(0)
        for i in range(80):
            Image.fromarray((rng.random((72, 90, 3)) * 255).astype(np.uint8)).save(folder / f"{i}.jpg")
        return ["--set", f"data.name=folder:{folder}"]
    if preset == "points":
        rng = np.random.default_rng(0)
        np.save(tmp_path / "mine.npy", rng.normal(size=(2000, 3)) * [1, 10, 0.1])
        return ["--set", f"data.name=points:{tmp_path / 'mine.npy'}"]
    return []


# The image presets at their own batch (and folder-dcgan at its own width, 250 ms a step at batch 4
# on a CPU without bfloat16) would add minutes to the suite; a smaller batch and width keep every
# step of the short run's path (schedules, the InfoGAN terms, evaluation, snapshots, checkpoints)
# and only make each step cheaper. The MNIST presets train at their own batch in the measured runs
# of docs/results.md and docs/benchmarks.md.
CHEAPER = {"folder-dcgan": ["train.batch_size=4", "model.conv_width=16"], "mnist-cdcgan": ["train.batch_size=16"],
           "mnist-dcgan": ["train.batch_size=32"]}

PRESETS = [pytest.param(name, marks=needs_shared_mnist) if "mnist" in name else name for name in preset_names()]


@pytest.mark.parametrize("preset", PRESETS)
def test_a_300_step_run_of_every_preset_ends_well(preset, tmp_path, capsys):
    run = tmp_path / "run"
    batch = [arg for item in CHEAPER.get(preset, []) for arg in ("--set", item)]
    assert main(["train", preset, "--steps", "300", "--out", str(run), *data_settings(preset, tmp_path), *batch]) == 0
    out = capsys.readouterr().out
    assert "Done: 300 steps" in out
    state = ckpt.load_checkpoint(ckpt.find_checkpoint(run))
    assert state["step"] == 300
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in rows if "d_loss" in r]
    assert logged and logged[-1]["step"] == 300 and all(np.isfinite(r["d_loss"]) for r in logged)
    assert not [r for r in rows if r.get("event") == "rollback"]
    assert (run / "plots" / "losses.png").is_file()
    assert sorted((run / "samples").glob("*step-000300.png")), "the final samples picture is missing"
