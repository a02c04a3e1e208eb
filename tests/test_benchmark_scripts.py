"""The speed benchmarks' helper scripts run as docs/benchmarks.md gives them (on a tiny preset here)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_step_windows_prints_one_time_per_window_and_a_summary():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "step_windows.py"), "quadratic", "--windows", "3",
                           "--steps", "4", "--warmup", "2"], env={**os.environ, "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    windows = [float(ms) for ms in done.stdout.split()]
    assert len(windows) == 3 and all(ms > 0 for ms in windows)
    assert f"fastest {min(windows):.1f}" in done.stderr and "ms per step" in done.stderr
