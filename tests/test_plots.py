"""Every picture is drawn from the run directory alone and is a readable image."""
import json

import numpy as np
import pytest
from PIL import Image

from gankit import config
from gankit.training import Trainer
from gankit.viz import plots


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from gankit.presets import load_preset
    from tests.conftest import TINY

    path = tmp_path_factory.mktemp("run")
    Trainer(config.with_overrides(load_preset("quadratic"), TINY), path).fit(progress=False)
    return path


def readable(path, min_size=(300, 200)):
    with Image.open(path) as im:
        im.load()
        assert im.size[0] >= min_size[0] and im.size[1] >= min_size[1]
        return getattr(im, "n_frames", 1)


def test_plot_run_draws_every_picture(run_dir):
    made = plots.plot_run(run_dir)
    names = {p.relative_to(run_dir).as_posix() for p in made}
    steps = ["000001", "000010", "000020"]
    expected = {"plots/losses.png", "plots/scatter.gif", "plots/surface.gif",
                "plots/features-d-update.gif", "plots/features-g-update.gif"}
    for s in steps:
        expected |= {f"samples/scatter-step-{s}.png", f"plots/surface/step-{s}.png",
                     f"plots/features/d-update-step-{s}.png", f"plots/features/g-update-step-{s}.png"}
    assert expected <= names
    for path in made:
        frames = readable(path)
        if path.suffix == ".gif":
            assert frames == len(steps)


def test_losses_plot_without_snapshots(run_dir, tmp_path):
    (tmp_path / "metrics.jsonl").write_text((run_dir / "metrics.jsonl").read_text() + '{"step": 9')
    path = plots.plot_losses(tmp_path, "ns")  # a cut last line is skipped, not fatal
    readable(path)


def test_feature_views_project_wide_features_to_2d(tmp_path):
    rng = np.random.default_rng(0)
    snap = {k: rng.normal(size=(40, 5)) for k in
            ("feat_real_d0", "feat_fake_d0_g0", "feat_real_d1", "feat_fake_d1_g0", "feat_fake_d1_g1")}
    readable(plots.plot_feature_pair(snap, 3, "g", tmp_path / "g.png"))
    one_d = {k: v[:, :1] for k, v in snap.items()}
    readable(plots.plot_feature_pair(one_d, 3, "d", tmp_path / "d.png"))


def test_equilibrium_lines_follow_the_loss():
    assert plots.equilibrium("ns") == pytest.approx((1.3862944, 0.6931472))
    assert plots.equilibrium("hinge") == (None, None)


def test_a_critic_run_of_an_earlier_version_still_plots(tmp_path):
    """hinge runs logged sigmoid(critic) as d_real before; resumed now, they log critic_real: one plot."""
    from gankit.presets import load_preset
    from gankit.viz.plots import plot_losses

    (tmp_path / "config.toml").write_text(config.dumps(config.replace(load_preset("quadratic"), "loss", name="hinge")))
    rows = [{"step": 10, "d_loss": 1.0, "g_loss": 0.5, "d_real": 0.6, "d_fake": 0.4},
            {"step": 20, "d_loss": 0.9, "g_loss": 0.4, "critic_real": 0.8, "critic_fake": -0.3}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot_losses(tmp_path, "hinge").is_file()
