"""Evaluation in the workflow: `gankit eval`, eval.every during training, the bundled classifier,
cached real features and learning-rate schedules."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gankit import config
from gankit.cli import main
from gankit.errors import UserError
from gankit.metrics import classifier as clf
from gankit.metrics import evaluate as ev
from gankit.presets import load_preset
from gankit.training import Trainer
from tests.conftest import SHARED_MNIST, TINY, needs_shared_mnist


def eval_rows(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r.get("eval")]


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("eval") / "ring"
    sets = [a for item in TINY + ["eval.every=10", "eval.n=400", "model.pack=1"] for a in ("--set", item)]
    assert main(["train", "ring8", "--out", str(run_dir), "--quiet", *sets]) == 0
    return run_dir


def test_training_logs_evaluations_and_draws_them(ring_run):
    rows = eval_rows(ring_run)
    assert [r["step"] for r in rows] == [10, 20]
    for key in ("modes", "high_quality", "reverse_kl", "jsd", "value_d", "value_d_star", "d_star_error", "mmd2",
                "wasserstein"):
        assert key in rows[-1], key
    assert 0 <= rows[-1]["jsd"] <= math.log(2) + 1e-6
    for name in ("plots/eval.png", "plots/probability.gif", "plots/probability/step-000020.png",
                 "snapshots/prob-step-000020.npz"):
        assert (ring_run / name).exists(), name
    with np.load(ring_run / "snapshots" / "prob-step-000020.npz") as snap:
        assert snap["d_star"].shape == snap["d_model"].shape
        assert np.all((snap["d_model"] >= 0) & (snap["d_model"] <= 1))


def test_eval_cli_prints_json(ring_run, capsys):
    code = main(["eval", str(ring_run), "--json", "-n", "300", "--metrics", "modes,mmd"])
    out, err = capsys.readouterr()
    assert code == 0, err
    scores = json.loads(out)
    assert scores["step"] == 20 and scores["n"] == 300
    assert set(scores) == {"step", "drs", "n", "modes", "high_quality", "reverse_kl", "mode_spread", "mmd2",
                           "mmd_bandwidth"}


def test_eval_matches_the_metric_on_sampled_points(ring_run, tmp_path, capsys):
    """gankit eval scores exactly what gankit sample gives (same seed, same generator)."""
    from gankit.data.toy import ring8
    from gankit.metrics.toy import mixture_scores

    assert main(["sample", str(ring_run), "-n", "300", "--seed", "4", "--out", str(tmp_path / "s.npy")]) == 0
    capsys.readouterr()
    assert main(["eval", str(ring_run), "--json", "-n", "300", "--seed", "4", "--metrics", "modes"]) == 0
    scores = json.loads(capsys.readouterr()[0])
    source = ring8()
    expect = mixture_scores(np.load(tmp_path / "s.npy"), source.centres.numpy(), source.std)
    assert scores["high_quality"] == pytest.approx(expect["high_quality"])
    assert scores["modes"] == expect["modes"]


@pytest.mark.parametrize("args, message", [
    (["--metrics", "fid"], "does not apply"),
    (["--metrics", "modez"], "did you mean 'modes'"),
    (["-n", "3"], "at least 10"),
    (["--set", "train.steps=3"], "only takes data"),
])
def test_eval_bad_input(ring_run, capsys, args, message):
    assert main(["eval", str(ring_run), *args]) == 2
    err = capsys.readouterr()[1]
    assert message in err and err.count("\n") == 1


def test_eval_of_a_missing_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr()[1]


def test_unknown_metric_in_config_fails_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "ring8", "--out", str(out), "--quiet", "--set", "eval.metrics=modes,fidd"]) == 2
    assert "unknown metric 'fidd'" in capsys.readouterr()[1]
    assert not out.exists()


def test_list_metrics(capsys):
    assert main(["list", "metrics"]) == 0
    out = capsys.readouterr()[0]
    for name in ("modes", "probability", "fid", "kid", "prdc", "classifier", "fid_inception"):
        assert name in out


def test_inception_metrics_say_how_to_get_them(ring_run, tmp_path, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_fidelity(name, *args, **kwargs):
        if name.startswith("torch_fidelity"):
            raise ImportError("No module named 'torch_fidelity'")
        return real_import(name, *args, **kwargs)

    from gankit.metrics import inception

    inception.load_inception.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_fidelity)
    with pytest.raises(UserError, match="pip install gankit\\[inception\\]"):
        inception.inception_features(np.zeros((2, 28, 28, 1), np.uint8))
    inception.load_inception.cache_clear()


# --------------------------------------------------------------------------- image metrics on a tiny run

def test_image_run_is_scored_with_the_classifier(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    images = (rng.random((64, 28, 28)) * 255).astype(np.uint8)
    np.save(tmp_path / "imgs.npy", images)
    cfg = config.with_overrides(load_preset("mnist-dcgan"), [
        f"data.name=images:{tmp_path / 'imgs.npy'}", "train.steps=2", "train.batch_size=8", "model.conv_width=4",
        "train.snapshot_every=0", "eval.every=2", "eval.n=40", "eval.metrics=fid,kid,prdc,classifier"])
    trainer = Trainer(cfg, tmp_path / "run").fit(progress=False)
    row = eval_rows(tmp_path / "run")[-1]
    for key in ("fid", "kid", "precision", "recall", "density", "coverage", "classifier_score", "confident",
                "classes_covered", "class_kl"):
        assert key in row, key
    assert list((tmp_path / "cache" / "features").glob("*.npz"))  # real features cached
    again = ev.evaluate(trainer.eval_target(), ["fid"], 40, seed=0)
    assert again["fid"] == pytest.approx(row["fid"], rel=1e-5)  # from the cache: same numbers


def test_bundled_classifier_is_intact_and_reads_digits():
    model = clf.load_classifier()
    assert clf.sha256(clf.WEIGHTS) == clf.WEIGHTS_SHA256
    feats, probs = clf.features_and_probs(np.zeros((3, 28, 28, 1), np.uint8), model)
    assert feats.shape == (3, clf.FEATURE_DIM) and probs.shape == (3, 10)
    assert np.allclose(probs.sum(1), 1, atol=1e-5)


@needs_shared_mnist
def test_classifier_accuracy_on_the_shared_mnist_test_set():
    from gankit.data.images import load_idx_dataset

    test = load_idx_dataset("mnist", str(SHARED_MNIST), "test", download=False)
    _, probs = clf.features_and_probs(test.images[:2000].numpy())
    assert (probs.argmax(1) == test.labels[:2000].numpy()).mean() > 0.97


def test_damaged_classifier_weights_are_refused(tmp_path):
    bad = tmp_path / "w.pt"
    bad.write_bytes(clf.WEIGHTS.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(UserError, match="SHA-256"):
        clf.load_classifier.__wrapped__(bad)
    with pytest.raises(UserError, match="missing"):
        clf.load_classifier.__wrapped__(tmp_path / "none.pt")


def test_classifier_rejects_other_image_shapes():
    with pytest.raises(UserError, match="28x28 grey"):
        clf.features_and_probs(np.zeros((2, 32, 32, 3), np.uint8))


def test_cached_features_survive_a_damaged_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path))
    calls = []

    def compute(x):
        calls.append(1)
        return (x.astype(np.float64) * 2,)

    x = np.arange(12, dtype=np.uint8).reshape(3, 4)
    first = ev.cached_features(x, "double", compute)[0]
    second = ev.cached_features(x, "double", compute)[0]
    assert len(calls) == 1 and np.array_equal(first, second)
    for f in (tmp_path / "features").glob("*.npz"):
        f.write_bytes(b"garbage")
    assert np.array_equal(ev.cached_features(x, "double", compute)[0], first) and len(calls) == 2
    ev.cached_features(x + 1, "double", compute)  # other images: another entry
    assert len(calls) == 3


# --------------------------------------------------------------------------- learning-rate schedules

def rates_per_step(tiny_cfg, tmp_path, schedule):
    cfg = config.with_overrides(tiny_cfg, [f"train.lr_schedule={schedule}", "train.lr_final=0.1",
                                           "train.snapshot_every=0", "optim_d.lr=0.004"])
    trainer = Trainer(cfg, tmp_path)
    seen_g, seen_d = [], []
    trainer.opt_g.register_step_pre_hook(lambda opt, *_: seen_g.append(opt.param_groups[0]["lr"]))
    trainer.opt_d.register_step_pre_hook(lambda opt, *_: seen_d.append(opt.param_groups[0]["lr"]))
    trainer.fit(progress=False)
    return np.array(seen_g) / cfg.optim_g.lr, np.array(seen_d) / cfg.optim_d.lr


@pytest.mark.parametrize("schedule", ["constant", "linear", "cosine"])
def test_lr_schedule_rate_at_every_step(tiny_cfg, tmp_path, schedule):
    g, d = rates_per_step(tiny_cfg, tmp_path, schedule)
    assert len(g) == len(d) == 20  # one G and one D update a step
    np.testing.assert_allclose(g, d, rtol=1e-12)  # both networks follow the same factor
    assert g[0] == pytest.approx(1.0)  # the first step runs at the configured rate
    if schedule == "constant":
        np.testing.assert_allclose(g, 1.0)
        return
    assert np.all(np.diff(g) < 0)
    assert g[19] == pytest.approx(0.1)  # the last step runs at lr_final
    np.testing.assert_allclose(g + g[::-1], 1.1)  # symmetric about the midpoint, between 1 and lr_final
    if schedule == "linear":
        np.testing.assert_allclose(np.diff(g), -0.9 / 19)  # equal steps down
    else:
        assert g[5] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 5 / 19)))  # above the line early


def test_lr_schedule_resumes_exactly(tiny_cfg, tmp_path):
    cfg = config.with_overrides(tiny_cfg, ["train.lr_schedule=linear", "train.lr_final=0.0"])
    straight = Trainer(cfg, tmp_path / "a").fit(progress=False)
    Trainer(cfg, tmp_path / "b").fit(steps=10, progress=False)
    resumed = Trainer.resume(tmp_path / "b").fit(steps=20, progress=False)
    for p, q in zip(straight.g.parameters(), resumed.g.parameters()):
        assert torch.equal(p, q)


def test_packed_discriminator_gets_jsd_but_no_pointwise_d(tmp_path):
    """With PacGAN packing D judges groups of samples: D(x) of one point does not exist."""
    cfg = config.with_overrides(load_preset("ring8"), TINY + ["eval.every=0", "model.pack=4"])
    trainer = Trainer(cfg, tmp_path).fit(progress=False)
    scores = ev.evaluate(trainer.eval_target(), ["probability"], 200)
    assert "jsd" in scores and "value_d" not in scores and "d_star_error" not in scores


def test_probability_view_scores_the_live_generator_not_its_ema(tmp_path):
    """D was trained against the live G: D* and V(D, G) must use its samples, not the EMA copy's."""
    from gankit.metrics import probability as prob

    cfg = config.with_overrides(load_preset("ring8"), TINY + ["eval.every=0", "model.pack=1", "train.ema_decay=0.9"])
    trainer = Trainer(cfg, tmp_path).fit(progress=False)
    target = trainer.eval_target()
    scores = ev.evaluate(target, ["probability"], 200)

    def view(samples):
        density = prob.GeneratedDensity(samples)
        return prob.probability_view(ev.blurred_log_prob(trainer.source, density), ev.real_samples(target, 200, 0),
                                     density, target.d_prob)

    live, ema = view(trainer.evaluation.live_samples(200, 0)), view(target.sample(200, 0))
    assert {k: v for k, v in scores.items() if k != "n"} == pytest.approx(live)
    assert ema["value_d"] != pytest.approx(live["value_d"])  # early in training JSD saturates at log 2 for both


def test_truncation_scales_the_noise_and_labels_the_scores(ring_run, tmp_path, capsys):
    """--truncation PSI: G's continuous noise times PSI, its category kept; eval says so in its scores,
    and scores exactly what `gankit sample --truncation PSI` gives."""
    from gankit.api import load

    gan = load(ring_run)
    sampler, model = gan.sampler, gan.sampler.config.model
    full, half = sampler.noise(300, 4), sampler.noise(300, 4, truncation=0.5)
    drawn = torch.randn(300, model.z_dim, generator=torch.Generator().manual_seed(4)) * model.z_std
    assert torch.equal(full[:, :model.z_dim], drawn)  # 1: the noise G was trained on, to the bit
    assert torch.equal(half[:, :model.z_dim], drawn * 0.5)
    assert torch.equal(half[:, model.z_dim:], full[:, model.z_dim:])  # the one-hot categories are not scaled
    np.testing.assert_array_equal(gan.sample(300, seed=4, truncation=0.5), sampler.generate(half, None))
    paths = sampler.interpolate(2, steps=3, seed=4, truncation=0.5).reshape(2, 3, -1)
    starts = sampler.noise(4, 4, truncation=0.5).reshape(2, 2, -1)[:, 0]
    np.testing.assert_array_equal(paths[:, 0], sampler.generate(starts, None))

    assert main(["sample", str(ring_run), "-n", "300", "--seed", "4", "--truncation", "0.5",
                 "--out", str(tmp_path / "s.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), sampler.generate(half, None))
    trainer = Trainer.resume(ring_run)
    target = trainer.eval_target(0.5)
    untruncated = trainer.eval_target()  # a later target does not change the first
    np.testing.assert_array_equal(target.sample(300, 4), np.load(tmp_path / "s.npy"))
    # the probability view judges D against the G it faced: untruncated, whatever the sampler draws
    np.testing.assert_array_equal(target.game_sample(300, 4), untruncated.game_sample(300, 4))
    assert not np.array_equal(target.game_sample(300, 4), target.sample(300, 4))
    capsys.readouterr()
    scores = {}
    for psi in ("1", "0.5"):
        assert main(["eval", str(ring_run), "--json", "-n", "300", "--seed", "4", "--metrics", "mmd",
                     "--truncation", psi]) == 0
        scores[psi] = json.loads(capsys.readouterr()[0])
    assert "truncation" not in scores["1"] and scores["0.5"]["truncation"] == 0.5
    assert scores["0.5"]["mmd2"] != pytest.approx(scores["1"]["mmd2"])
    assert gan.evaluate(["mmd"], 300, 4, truncation=0.5)["mmd2"] == scores["0.5"]["mmd2"]


@pytest.mark.parametrize("psi", ["0", "-0.5", "nan", "inf", "1e39"])
def test_eval_refuses_a_truncation_that_is_no_scale(ring_run, capsys, psi):
    assert main(["eval", str(ring_run), "--truncation", psi]) == 2
    err = capsys.readouterr()[1]
    assert "--truncation" in err and "above 0 and at most 100" in err and err.count("\n") == 1
