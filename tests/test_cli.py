"""The `gankit` command as a user types it: train -> plot -> sample, list, config, and bad input."""
import hashlib
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from gankit.cli import main
from gankit.viz.plots import read_metrics
from tests.conftest import TINY, digest

SETS = [arg for item in TINY for arg in ("--set", item)]


def run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "quadratic", "--out", str(run_dir), "--quiet", *SETS]) == 0
    return run_dir


def test_train_writes_run_and_plots(trained):
    for name in ("config.toml", "metrics.jsonl", "checkpoints/latest.pt", "plots/losses.png",
                 "plots/scatter.gif", "plots/surface.gif", "samples/scatter-step-000020.png"):
        assert (trained / name).exists(), name


def test_train_summary_names_the_plots_it_drew(tmp_path, capsys):
    code, out, _ = run(["train", "quadratic", "--out", str(tmp_path / "r"), "--quiet", *SETS], capsys)
    plots_line = next(line for line in out.splitlines() if "plots:" in line)
    assert code == 0 and "losses.png" in plots_line and "surface.gif" in plots_line
    code, out, _ = run(["train", "quadratic", "--out", str(tmp_path / "bare"), "--quiet", "--no-plots", *SETS],
                       capsys)
    assert code == 0 and "none yet: gankit plot RUN" in out


def test_plot_redraws(trained, capsys):
    (trained / "plots" / "losses.png").unlink()
    code, out, _ = run(["plot", str(trained)], capsys)
    assert code == 0 and (trained / "plots" / "losses.png").exists() and "drew" in out


@pytest.mark.parametrize("suffix", [".npz", ".npy", ".csv", ".png"])
def test_sample_writes_every_format(trained, tmp_path, capsys, suffix):
    out = tmp_path / f"s{suffix}"
    code, _, err = run(["sample", str(trained), "-n", "300", "--out", str(out), "--seed", "1"], capsys)
    assert code == 0, err
    if suffix == ".npz":
        samples = np.load(out)["samples"]
        assert samples.shape == (300, 2) and samples.dtype == np.float32
        assert np.abs(samples[:, 0]).max() > 5  # data units (x spans +-50), not normalised ones
    elif suffix == ".npy":
        assert np.load(out).shape == (300, 2)
    elif suffix == ".csv":
        assert np.loadtxt(out, delimiter=",", skiprows=1).shape == (300, 2)
    else:
        Image.open(out).verify()


def test_sample_is_reproducible_from_a_checkpoint_file(trained, tmp_path, capsys):
    ckpt = trained / "checkpoints" / "latest.pt"
    for name in ("a.npy", "b.npy"):
        assert run(["sample", str(ckpt), "-n", "50", "--out", str(tmp_path / name), "--seed", "3"], capsys)[0] == 0
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_resume_to_a_larger_total(trained, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    code, _, err = run(["resume", str(copy), "--steps", "30", "--quiet", "--no-plots"], capsys)
    assert code == 0, err
    assert "step-000030.pt" in os.listdir(copy / "checkpoints")


def test_list_and_config(capsys):
    for kind, expected in (("presets", "seed-quadratic"), ("datasets", "ring8"), ("losses", "wgan-gp"),
                           ("models", "mlp")):
        code, out, _ = run(["list", kind], capsys)
        assert code == 0 and expected in out
    code, out, _ = run(["config", "seed-quadratic"], capsys)
    assert code == 0 and 'name = "rmsprop"' in out and "n_d = 10" in out


def test_config_output_reruns(tmp_path, capsys):
    _, out, _ = run(["config", "quadratic", "--set", "train.steps=7"], capsys)
    (tmp_path / "c.toml").write_text(out)
    code, _, err = run(["train", str(tmp_path / "c.toml"), "--out", str(tmp_path / "r"), "--quiet", "--no-plots"],
                       capsys)
    assert code == 0, err
    assert '"step": 7' in (tmp_path / "r" / "metrics.jsonl").read_text()


def test_users_own_points(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "mine.npy", rng.normal([5.0, -3.0], [1.0, 0.2], size=(500, 2)))
    code, _, err = run(["train", "quadratic", "--out", str(tmp_path / "r"), "--quiet", "--no-plots", *SETS,
                        "--set", f"data.name=points:{tmp_path / 'mine.npy'}"], capsys)
    assert code == 0, err
    assert run(["sample", str(tmp_path / "r"), "-n", "100", "--out", str(tmp_path / "s.npy")], capsys)[0] == 0
    assert abs(np.load(tmp_path / "s.npy")[:, 0].mean() - 5.0) < 3.0  # data units




BAD = [
    ["train", "no-such-preset"],
    ["train", "quadratic", "--set", "train.stepz=3"],
    ["train", "quadratic", "--set", "train.steps=-1"],
    ["train", "quadratic", "--set", "loss.name=hing"],
    ["train", "quadratic", "--set", "data.name=nowhere"],
    ["train", "quadratic", "--set", "data.name=points:/no/such.npy"],
    ["train", "quadratic", "--set", "nonsense"],
    ["train", "quadratic", "--steps", "ten"],
    ["train", "quadratic", "--bogus-flag"],
    ["train", "missing.toml"],
    ["sample", "RUN", "-n", "10", "--out", "x.txt"],
    ["sample", "RUN", "-n", "0", "--out", "x.npz"],
    ["sample", "/no/such/run", "-n", "10", "--out", "x.npz"],
    ["sample", "RUN", "-n", "10", "--out", "x.npz", "--truncation", "0"],
    ["sample", "RUN", "-n", "10", "--out", "x.npz", "--truncation", "nan"],
    ["plot", "/no/such/run"],
    ["list", "things"],
    ["config", "nope"],
    ["resume", "RUN", "--steps", "3"],
    ["resume", "RUN", "--set", "optim_d.lr=0.1"],
    ["resume", "RUN", "--set", "train.batch_size=64"],
    ["resume", "RUN/config.toml"],
    ["train", "quadratic", "--out", "RUN"],
]


@pytest.mark.parametrize("args", BAD, ids=[" ".join(a) for a in BAD])
def test_bad_input_is_one_line_exit_2_and_touches_nothing(trained, tmp_path, capsys, args, monkeypatch):
    monkeypatch.chdir(tmp_path)
    before = digest(trained)
    args = [a.replace("RUN", str(trained)) for a in args]
    with pytest.raises(SystemExit) as stop:
        raise SystemExit(main(args))
    _, err = capsys.readouterr()
    assert stop.value.code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gankit: error: ") and "Traceback" not in err
    assert digest(trained) == before
    assert not (tmp_path / "runs").exists() and not list(tmp_path.glob("x.*"))


def test_corrupt_checkpoint_is_a_clear_error(trained, tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    data = (trained / "checkpoints" / "latest.pt").read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    code, _, err = run(["sample", str(bad), "-n", "5", "--out", str(tmp_path / "x.npz")], capsys)
    assert code == 2 and "corrupt" in err and len(err.strip().splitlines()) == 1


def test_console_script_runs_in_a_fresh_process(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    gankit = os.path.join(os.path.dirname(sys.executable), "gankit")
    done = subprocess.run([gankit, "train", "--out", str(tmp_path / "r"), "--quiet", *SETS],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "run directory" in done.stdout and (tmp_path / "r" / "plots" / "losses.png").exists()
    bad = subprocess.run([gankit, "train", "nope"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unknown preset" in bad.stderr


def test_export_a_vector_generator(trained, tmp_path):
    import torch

    from gankit.api import GAN

    assert main(["export", str(trained), "--out", str(tmp_path / "g.pt2")]) == 0
    g = torch.export.load(tmp_path / "g.pt2").module()
    z = torch.rand(7, 2) * 2 - 1
    with torch.no_grad():
        out = g(z).numpy()
    assert np.allclose(out, GAN.load(trained).sampler.generate(z, None), atol=1e-5)


# --------------------------------------------------------------------------- data a new user brings

def test_one_dimensional_points_train_and_plot(tmp_path, capsys):
    np.save(tmp_path / "one.npy", np.random.default_rng(0).normal(size=10))  # shape (10,): ten 1-D points
    out = tmp_path / "r"
    code, _, err = run(["train", "quadratic", "--out", str(out), "--quiet", *SETS,
                        "--set", f"data.name=points:{tmp_path / 'one.npy'}"], capsys)
    assert code == 0, err
    assert "fewer than train.batch_size" in err  # 10 points, batches of 32
    assert (out / "plots" / "scatter.gif").is_file()
    assert run(["plot", str(out)], capsys)[0] == 0


@pytest.mark.parametrize("sep, name", [(";", "semicolons"), ("\t", "tabs")])
def test_a_csv_with_another_separator_says_use_commas(tmp_path, capsys, sep, name):
    (tmp_path / "x.csv").write_text(f"x{sep}y\n1,5{sep}2\n3{sep}4\n")
    code, _, err = run(["train", "quadratic", "--out", str(tmp_path / "r"),
                        "--set", f"data.name=points:{tmp_path / 'x.csv'}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert name in err and "commas" in err
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- recovery the guide promises

def test_resume_from_an_earlier_checkpoint_when_latest_is_damaged(trained, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    latest = copy / "checkpoints" / "latest.pt"
    latest.write_bytes(latest.read_bytes()[:100])  # damaged (a hard link: step-000020.pt with it)
    code, _, err = run(["resume", str(copy), "--quiet", "--no-plots"], capsys)
    assert code == 2 and "step-*.pt" in err
    code, _, err = run(["resume", str(copy / "checkpoints" / "step-000010.pt"), "--steps", "20", "--quiet",
                        "--no-plots"], capsys)
    assert code == 0, err
    assert (copy / "checkpoints" / "abandoned" / "step-000020.pt").is_file()  # set aside, not deleted
    assert run(["sample", str(copy), "-n", "5", "--out", str(tmp_path / "s.npy")], capsys)[0] == 0


def test_resume_takes_settings_that_leave_training_unchanged(trained, tmp_path, capsys):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(trained, copy)
    code, _, err = run(["resume", str(copy), "--steps", "30", "--set", "train.checkpoint_every=5",
                        "--set", "data.root=elsewhere", "--quiet", "--no-plots"], capsys)
    assert code == 0, err
    assert "step-000025.pt" in os.listdir(copy / "checkpoints")


def test_a_time_budget_stops_training_saves_the_step_and_resumes_with_more_time(tmp_path, capsys):
    import torch

    run_dir = tmp_path / "r"
    # a budget of 1.2 ms, spent by the first log step (train.log_every = 5), long before train.steps;
    # checked as a log step begins, that step is the last
    code, out, err = run(["train", "quadratic", "--out", str(run_dir), "--quiet", "--no-plots", *SETS,
                          "--steps", "2000", "--max-minutes", "0.00002", "--set", "eval.every=1000",
                          "--set", "eval.n=100", "--set", "eval.metrics=[\"mmd\"]"], capsys)
    assert code == 0, err
    assert "or 2e-05 minutes, whichever comes first" in err and "train.max_minutes = 2e-05 reached" in err
    stopped = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)
    assert stopped["step"] == 5 and "Done: 5 steps" in out
    rows = read_metrics(run_dir)
    event = next(r for r in rows if r.get("event") == "time_budget")
    assert event["step"] == 5 and event["steps"] == 2000 and event["seconds"] >= 0.001
    # the last step is logged, drawn and scored as a run's end is, though no multiple of eval.every
    assert [r["step"] for r in rows if "d_loss" in r][-1] == 5
    assert [r["step"] for r in rows if r.get("eval")] == [5]
    assert (run_dir / "snapshots" / "step-000005.npz").is_file()
    # the budget is the run's, across resumes: spent, a resume is refused until it gets more time
    code, _, err = run(["resume", str(run_dir), "--quiet", "--no-plots"], capsys)
    assert code == 2 and "whole time budget" in err and "--max-minutes M" in err
    assert torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)["step"] == stopped["step"]
    code, _, err = run(["resume", str(run_dir), "--steps", "30", "--max-minutes", "0", "--quiet", "--no-plots"],
                       capsys)
    assert code == 0, err
    resumed = torch.load(run_dir / "checkpoints" / "latest.pt", weights_only=False)
    # the stop and the resume change nothing in the steps: the same weights as one run of 30 steps
    code, _, err = run(["train", "quadratic", "--out", str(tmp_path / "straight"), "--quiet", "--no-plots", *SETS,
                        "--steps", "30"], capsys)
    assert code == 0, err
    straight = torch.load(tmp_path / "straight" / "checkpoints" / "latest.pt", weights_only=False)
    assert resumed["step"] == straight["step"] == 30
    for key in straight["g"]:
        assert torch.equal(straight["g"][key], resumed["g"][key]), key


def test_a_negative_time_budget_is_refused(tmp_path, capsys):
    code, _, err = run(["train", "quadratic", "--out", str(tmp_path / "r"), "--max-minutes", "-1"], capsys)
    assert code == 2 and "train.max_minutes = -1.0 is not valid: must be >= 0" in err
    assert not (tmp_path / "r").exists()
