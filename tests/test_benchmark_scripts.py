"""The speed benchmarks' helper scripts run as docs/benchmarks.md gives them (on a tiny preset here)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_step_windows_prints_a_step_time_and_a_reference_time_per_window_and_a_summary():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "step_windows.py"), "quadratic", "--windows", "3",
                           "--steps", "4", "--warmup", "2"], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = [[float(ms) for ms in line.split()] for line in done.stdout.splitlines()]
    assert len(lines) == 3 and all(len(line) == 2 and min(line) > 0 for line in lines)
    windows, products = [line[0] for line in lines], [line[1] for line in lines]
    assert f"fastest {min(windows):.1f}" in done.stderr and "ms per step" in done.stderr
    assert f"reference product: fastest {min(products):.3f}, slowest {max(products):.3f} ms" in done.stderr
