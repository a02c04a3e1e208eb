"""The benchmarks' helper scripts run as docs/benchmarks.md gives them (on tiny presets or a few steps here)."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_step_windows_prints_a_step_time_and_two_reference_times_per_window_and_a_summary():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "step_windows.py"), "quadratic", "--windows", "3",
                           "--steps", "4", "--warmup", "2"], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [[float(ms) for ms in line.split()] for line in done.stdout.splitlines()]
    assert len(lines) == 3 and all(len(line) == 3 and min(line) > 0 for line in lines)
    windows, products, multiplies = zip(*lines)
    assert f"fastest {min(windows):.1f}" in done.stderr and "ms per step" in done.stderr
    assert f"reference product: fastest {min(products):.3f}, slowest {max(products):.3f} ms" in done.stderr
    assert f"the multiply: fastest {min(multiplies):.1f}, slowest {max(multiplies):.1f} us" in done.stderr


MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
TF_PYTHON = Path(__file__).resolve().parents[2] / "tf-env" / "bin" / "python"


def run_in_turns(kinds: list[str], turns: int = 3) -> subprocess.CompletedProcess:
    if not MNIST.is_dir():
        pytest.skip("the benchmark's MNIST (../shared/data/mnist) is not beside this checkout")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "step_speed.py"), "--nets", "mlp", "--batches", "8",
                           "--turns", str(turns), "--window", "2", "--warmup", "2", "--kinds", *kinds,
                           "--tf-python", str(TF_PYTHON)],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done


def turn_speeds(done: subprocess.CompletedProcess, kinds: list[str]) -> dict[str, list[float]]:
    """Each kind's images/s in each turn, from the turns' lines on stderr."""
    turns = [line for line in done.stderr.splitlines() if line.startswith("turn ")]
    speeds = {kind: [] for kind in kinds}
    for line in turns:
        for kind in kinds:
            speeds[kind].append(float(re.search(rf"\b{kind} ([\d,]+)", line).group(1).replace(",", "")))
    return speeds


def test_step_speed_in_turns_times_each_kind_in_every_turn_and_tabulates_their_medians():
    done = run_in_turns(["gankit", "torch"])
    turns = [line for line in done.stderr.splitlines() if line.startswith("turn ")]
    assert [line.split(":")[0] for line in turns] == ["turn 1", "turn 2", "turn 3"]
    assert all(re.search(r"gankit / faster peer \d+\.\d\dx", line) for line in turns)
    speeds = turn_speeds(done, ["gankit", "torch"])
    row = next(line for line in done.stdout.splitlines() if line.startswith("| mlp"))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:2] == ["mlp, windows of 2 steps from step 2", "8"]
    assert float(cells[2].replace(",", "")) == pytest.approx(statistics.median(speeds["gankit"]), abs=0.5)
    assert float(cells[3].replace(",", "")) == pytest.approx(statistics.median(speeds["torch"]), abs=0.5)
    assert "median of 3 windows per kind, taken in turns" in done.stdout


def test_step_speed_in_turns_serves_the_tf_keras_peer_too():
    if not TF_PYTHON.is_file():
        pytest.skip("no TF-Keras peer beside this checkout (python3 -m venv ../tf-env && "
                    "../tf-env/bin/pip install tensorflow-cpu)")
    done = run_in_turns(["tf", "torch"], turns=2)
    speeds = turn_speeds(done, ["tf", "torch"])
    assert len(speeds["tf"]) == 2 and min(speeds["tf"]) > 0
    header, *_ = [line.strip("|").split("|") for line in done.stdout.splitlines() if line.startswith("| networks")]
    row = next(line for line in done.stdout.splitlines() if line.startswith("| mlp")).strip("|").split("|")
    tf_cell = row[[name.strip() for name in header].index("TF-Keras")]
    assert float(tf_cell.replace(",", "")) == pytest.approx(statistics.median(speeds["tf"]), abs=0.5)


def run_lr_branches(*variants: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(BENCHMARKS / "lr_branches.py"), "--branch", "3", "--end", "6",
                           "--samples", "200", "--data", str(MNIST), *variants],
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)


def test_lr_branches_continues_one_saved_state_once_per_variant():
    if not MNIST.is_dir():
        pytest.skip("the benchmark's MNIST (../shared/data/mnist) is not beside this checkout")
    done = run_lr_branches("const", "wd0", "const")
    assert done.returncode == 0, done.stderr[-2000:]
    start, first, falling, again = [json.loads(line) for line in done.stdout.splitlines()]
    assert start["step"] == 3 and [row["variant"] for row in (first, falling, again)] == ["const", "wd0", "const"]
    assert all(row["step"] == 6 for row in (first, falling, again))
    assert again["fid"] == first["fid"] and again["classifier_score"] == first["classifier_score"]  # the same state
    assert falling["fid"] != first["fid"]  # the rates changed the last steps


def test_lr_branches_names_an_unknown_variant_before_it_trains():
    done = run_lr_branches("slow2")
    assert done.returncode == 2 and done.stderr.startswith("lr_branches.py: unknown variant 'slow2'")
    assert done.stderr.count("\n") == 1 and not done.stdout


def load_lr_branches():
    spec = importlib.util.spec_from_file_location("lr_branches", BENCHMARKS / "lr_branches.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_lr_branches_variants_scale_the_rates_they_name():
    factors = load_lr_branches().rate_factors
    assert factors("const", 10, 20)(15) == (1.0, 1.0)
    assert factors("up1.5", 10, 20)(15) == (1.5, 1.5)
    assert factors("g2", 10, 20)(15) == (2.0, 1.0) and factors("d2", 10, 20)(15) == (1.0, 2.0)
    falling = factors("wd0.2", 10, 20)
    assert falling(10) == (1.0, 1.0) and falling(19) == pytest.approx((0.2, 0.2))  # the end's last step
    assert falling(14) == pytest.approx((1.0 - 0.8 * 4 / 9,) * 2)


@pytest.mark.parametrize("name", ["slow2", "wd", "x1", "const2", "d1.2.3", "up."])
def test_lr_branches_refuses_a_malformed_variant(name, capsys):
    with pytest.raises(SystemExit) as stop:
        load_lr_branches().rate_factors(name, 10, 20)
    assert stop.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1


def run_seed_screen(out: Path, *recipes: list[str], seeds: tuple[str, ...] = ("0",),
                    extra: tuple[str, ...] = ("--steps", "3")) -> subprocess.CompletedProcess:
    recipe_args = [arg for recipe in recipes for arg in ("--recipe", *recipe)]
    return subprocess.run([sys.executable, str(BENCHMARKS / "seed_screen.py"), "--seeds", *seeds, *extra,
                           "-n", "200", "--metrics", "classifier", "--out", str(out), "--set", f"data.root={MNIST}",
                           "--set", "data.split=test", *recipe_args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)


def load_seed_screen():
    spec = importlib.util.spec_from_file_location("seed_screen", BENCHMARKS / "seed_screen.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_screen_trains_and_scores_each_recipe_with_its_own_overrides(tmp_path):
    if not MNIST.is_dir():
        pytest.skip("the benchmark's MNIST (../shared/data/mnist) is not beside this checkout")
    # step 1's checkpoint is the oldest of five (steps 0-4): the train.keep_checkpoints default, 3, would drop it
    done = run_seed_screen(tmp_path, ["preset"], ["slower_g", "optim_g.lr=0.0001"], extra=("--steps", "4", "--score-at", "1"))
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    preset, slower = [json.loads(line) for line in lines[:2]]
    assert (preset["recipe"], slower["recipe"], preset["seed"]) == ("preset", "slower_g", 0)
    assert preset["step"] == slower["step"] == 4
    assert preset["along"]["1"]["step"] == slower["along"]["1"]["step"] == 1  # scored from step 1's checkpoint
    assert f"classifier_score at 1 steps\n| recipe | seed 0 |" in done.stdout
    assert f"| preset | {preset['along']['1']['classifier_score']:.2f} |" in done.stdout
    assert slower["classifier_score"] != preset["classifier_score"]  # the override reached its run
    assert f"| preset | {preset['classifier_score']:.2f} |" in done.stdout
    kept = json.loads((tmp_path / "slower_g-s0" / "screen-result.json").read_text())
    assert kept.pop("settings")["set"][-1] == "optim_g.lr=0.0001" and kept == slower


def test_seed_screen_tabulates_means_and_differences_paired_by_seed():
    screen = load_seed_screen()
    args = screen.parse_args(["--steps", "10", "--seeds", "1", "2", "3",
                              "--recipe", "a", "--recipe", "b", "loss.info_real=3"])
    scores = {("a", 1): 7.0, ("a", 2): 6.0, ("a", 3): 8.0, ("b", 1): 7.5, ("b", 2): 5.0, ("b", 3): 9.0}
    rows = screen.table(args, {key: {"classifier_score": value} for key, value in scores.items()}).splitlines()
    assert rows[3] == "| a | 7.00 | 6.00 | 8.00 | 7.00 |  |"
    assert rows[4] == "| b | 7.50 | 5.00 | 9.00 | 7.17 | +0.17, 2 / 1 |"


def test_seed_screen_keeps_a_checkpoint_at_every_step_it_scores():
    screen = load_seed_screen()
    args = screen.parse_args(["--steps", "3500", "--score-at", "3000", "2500", "--seeds", "1", "--recipe", "a"])
    assert args.score_at == [2500, 3000]
    assert screen.checkpoint_settings(args) == ["train.checkpoint_every=500", "train.keep_checkpoints=8"]
    assert screen.checkpoint_settings(screen.parse_args(["--steps", "10", "--seeds", "1", "--recipe", "a"])) == []


def test_seed_screen_reuses_a_run_it_scored_with_the_same_settings_only(tmp_path, monkeypatch):
    screen = load_seed_screen()
    args = screen.parse_args(["--steps", "10", "--seeds", "4", "--recipe", "a", "--out", str(tmp_path)])
    (tmp_path / "a-s4").mkdir()
    scored = {"recipe": "a", "seed": 4, "classifier_score": 7.0, "settings": screen.settings(args, [])}
    (tmp_path / "a-s4" / "screen-result.json").write_text(json.dumps(scored))
    monkeypatch.setattr(screen.subprocess, "run", lambda *a, **k: pytest.fail("trained a run already scored"))
    assert screen.run_one(args, "a", [], 4)["classifier_score"] == 7.0
    longer = screen.parse_args(["--steps", "20", "--seeds", "4", "--recipe", "a", "--out", str(tmp_path)])
    with pytest.raises(screen.ScreenInputError, match="other settings \\(steps 10 there, 20 now\\)"):
        screen.run_one(longer, "a", [], 4)
    along = screen.parse_args(["--steps", "10", "--score-at", "5", "--seeds", "4", "--recipe", "a", "--out", str(tmp_path)])
    with pytest.raises(screen.ScreenInputError, match="score_at \\[\\] there, \\[5\\] now"):
        screen.run_one(along, "a", [], 4)


def test_seed_screen_reuses_a_run_scored_before_it_could_score_along_the_way(tmp_path, monkeypatch):
    screen = load_seed_screen()
    args = screen.parse_args(["--steps", "10", "--seeds", "4", "--recipe", "a", "--out", str(tmp_path)])
    (tmp_path / "a-s4").mkdir()
    older = {key: value for key, value in screen.settings(args, []).items() if key != "score_at"}
    (tmp_path / "a-s4" / "screen-result.json").write_text(json.dumps({"classifier_score": 7.0, "settings": older}))
    monkeypatch.setattr(screen.subprocess, "run", lambda *a, **k: pytest.fail("trained a run already scored"))
    assert screen.run_one(args, "a", [], 4)["classifier_score"] == 7.0


@pytest.mark.parametrize("argv, message", [
    (["--seeds", "6", "6", "--recipe", "a"], "a seed twice"),
    (["--seeds", "6", "--recipe", "a", "--recipe", "A", "loss.info_real=3"], "names must differ"),
    (["--seeds", "6", "--recipe", "a", "--recipe", "b", "--set", "loss.info_real=3"], "give the same config"),
    (["--seeds", "6", "--recipe", "a", "train.steps=5"], "set by the screen itself"),
    (["--seeds", "6", "--recipe", "a", "-n", "5"], "too few samples"),
    (["--seeds", "6", "--recipe", "a", "--metrics", "fid,clasifier"], "clasifier"),
    (["--seeds", "6", "--recipe", "a", "--score-at", "10"], "got 10"),
    (["--seeds", "6", "--recipe", "a", "--score-at", "5", "5"], "got 5 5"),
    (["--seeds", "6", "--recipe", "a", "train.checkpoint_every=2", "--score-at", "5"], "itself (--score-at)"),
    (["--seeds", "6", "--recipe", "a", "--set", "train.keep_checkpoints=9", "--score-at", "5"], "itself (--score-at)"),
    (["--steps", "1001", "--seeds", "6", "--recipe", "a", "--score-at", "500"], "a checkpoint every 1 steps"),
])
def test_seed_screen_refuses_bad_input_before_it_trains(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        load_seed_screen().parse_args(["--steps", "10", *argv])
    error = capsys.readouterr().err
    assert stopped.value.code == 2 and error.startswith("seed_screen.py: ") and message in error
    assert len(error.strip().splitlines()) == 1


def test_seed_screen_names_a_bad_override_before_anything_trains(tmp_path):
    done = run_seed_screen(tmp_path / "screen", ["preset"], ["typo", "loss.info_reel=3"])
    assert done.returncode == 2 and done.stderr.startswith("seed_screen.py: recipe 'typo': ")
    assert "info_reel" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "screen").exists()


def load_category_digits():
    spec = importlib.util.spec_from_file_location("category_digits", BENCHMARKS / "category_digits.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_category_digits_draws_each_category_alone(tmp_path, monkeypatch):
    if not MNIST.is_dir():
        pytest.skip("the benchmark's MNIST (../shared/data/mnist) is not beside this checkout")
    from gankit.api import GAN, Sampler
    GAN("mnist-dcgan", {"data.root": str(MNIST), "data.split": "test", "train.steps": 2, "train.max_minutes": 0},
        out=tmp_path / "run").fit()
    drawn = []
    generate = Sampler.generate
    monkeypatch.setattr(Sampler, "generate", lambda self, z, labels: drawn.append(z.clone()) or generate(self, z, labels))
    rows = load_category_digits().category_digits(str(tmp_path / "run"), 7, 0)
    assert [category for category, _, _ in rows] == list(range(10))
    for category, z in enumerate(drawn):
        assert z.shape == (7, 110) and torch.equal(z[:, 100:], torch.eye(10)[category].expand(7, 10))
        assert z[:, :100].std() > 0.5  # fresh continuous noise beside the category
    assert all(abs(shares.sum() - 1) < 1e-9 and 0 <= confident <= 1 for _, shares, confident in rows)


def test_category_digits_names_digits_no_category_draws_and_digits_drawn_twice():
    module = load_category_digits()
    rows = [(c, np.eye(10)[c], 1.0) for c in range(10)]
    rows[3] = (3, np.array([0.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0, 0.0, 0.8, 0.0]), 0.5)  # 3 drawn as 8s mostly
    table = module.describe(rows)
    assert "| 3 | 8: 80%, 3: 20% | 50% |" in table
    assert table.endswith("digits no category draws most: 3; drawn most by two or more: 8")


def test_category_digits_sorts_every_training_image_by_q_against_its_label(tmp_path):
    if not MNIST.is_dir():
        pytest.skip("the benchmark's MNIST (../shared/data/mnist) is not beside this checkout")
    from gankit.api import GAN
    GAN("mnist-dcgan", {"data.root": str(MNIST), "data.split": "test", "train.steps": 2, "train.max_minutes": 0},
        out=tmp_path / "run").fit()
    counts = load_category_digits().real_sorting(str(tmp_path / "run"))
    assert counts.shape == (10, 10) and counts.sum() == 10_000
    from gankit.data.images import load_idx_dataset
    labels = load_idx_dataset("mnist", str(MNIST), "test", download=False).labels.numpy()
    assert np.array_equal(counts.sum(0), np.bincount(labels, minlength=10))  # every image once, by its label


def test_category_digits_scores_q_one_to_one_whatever_the_categories_order():
    module = load_category_digits()
    counts = np.diag(np.arange(1, 11) * 10)[np.random.default_rng(0).permutation(10)]  # pure, shuffled
    assert module.one_to_one_accuracy(counts) == 1.0
    counts = np.zeros((10, 10), dtype=np.int64)
    counts[np.arange(10), np.arange(10)] = 90
    counts[0, :2], counts[1, :2] = (60, 30), (30, 0)  # category 0: 0s and 1s; category 1: 0s only
    # one digit per category: 60 of category 0's images agree (as 0s) and none of category 1's, or 30 and 30
    assert module.one_to_one_accuracy(counts) == pytest.approx((60 + 8 * 90) / counts.sum())
    assert "one-to-one accuracy" in module.describe_real(counts).splitlines()[-1]


def test_category_digits_refuses_real_sorting_without_q_before_printing_anything(tmp_path):
    if not MNIST.is_dir():
        pytest.skip("the benchmark's MNIST (../shared/data/mnist) is not beside this checkout")
    from gankit.api import GAN
    GAN("mnist-dcgan", {"data.root": str(MNIST), "data.split": "test", "train.steps": 2, "train.max_minutes": 0,
                        "loss.info_weight": 0, "loss.info_warp": 0, "loss.info_real": 0}, out=tmp_path / "run").fit()
    done = subprocess.run([sys.executable, str(BENCHMARKS / "category_digits.py"), str(tmp_path / "run"), "-n", "2",
                           "--real"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "--real needs a run with InfoGAN's code head" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and done.stdout == ""


def test_category_digits_refuses_a_run_without_categories(tmp_path):
    from gankit.api import GAN
    GAN("quadratic", {"train.steps": 2}, out=tmp_path / "run").fit()
    done = subprocess.run([sys.executable, str(BENCHMARKS / "category_digits.py"), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "needs a run of 28x28 images with InfoGAN categories" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_clustering_alone_scores_q_sorting_the_real_digits_at_each_report():
    if not MNIST.is_dir():
        pytest.skip("the benchmark's MNIST (../shared/data/mnist) is not beside this checkout")
    done = subprocess.run([sys.executable, str(BENCHMARKS / "clustering_alone.py"), "--root", str(MNIST),
                           "--steps", "3", "--every", "2", "--seeds", "0", "1", "--batch", "500"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    reports = re.findall(r"^seed (\d) step (\d): mutual information (-?[\d.]+) nats, one-to-one accuracy ([\d.]+)%",
                         done.stdout, re.M)
    assert [(seed, step) for seed, step, _, _ in reports] == [("0", "2"), ("0", "3"), ("1", "2"), ("1", "3")]
    assert all(-0.01 <= float(mi) <= math.log(10) + 0.01 and 10.0 <= float(acc) <= 100.0 for _, _, mi, acc in reports)


@pytest.mark.parametrize("flags,message", [(["--steps", "0"], "must be at least 1"),
                                           (["--warp", "3"], "--warp in (0, 2]"),
                                           (["--root", "no-such-folder"], "(give --root the folder")])
def test_clustering_alone_refuses_bad_input_in_one_line(flags, message):
    done = subprocess.run([sys.executable, str(BENCHMARKS / "clustering_alone.py"), *flags],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
