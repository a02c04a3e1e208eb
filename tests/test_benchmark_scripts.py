"""The speed benchmarks' helper scripts run as docs/benchmarks.md gives them (on a tiny preset here)."""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

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
