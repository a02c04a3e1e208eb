"""Each example in examples/ runs to the end with --quick, as a learner would start it."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import SHARED_MNIST, needs_shared_mnist

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

CASES = [
    pytest.param("counterfeiter_and_police.py", [], "equilibrium 2 ln 2", id="counterfeiter"),
    pytest.param("probability_view.py", [], "V(D*,G)", id="probability-view"),
    pytest.param("sigmoid_role.py", [], "gankit refused: image data needs model.g_output", id="sigmoid"),
    pytest.param("own_networks.py", [], "report.html", id="own-networks"),
    pytest.param("dcgan_mnist.py", ["--data-root", str(SHARED_MNIST), "--split", "test"], "bundled classifier",
                 id="dcgan-mnist", marks=needs_shared_mnist),
]


@pytest.mark.parametrize("script, extra, expected", CASES)
def test_example_runs_with_quick(script, extra, expected, tmp_path):
    done = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick", *extra], cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert expected in done.stdout
    if script != "sigmoid_role.py":  # its runs are temporary
        assert (tmp_path / "runs").is_dir()  # the example's run, where a learner finds it
