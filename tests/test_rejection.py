"""Discriminator rejection sampling: the acceptance rule, the critic's density-ratio estimate, and the
workflow (train.drs_steps, gankit sample/eval with and without --raw, resume)."""
from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from gankit import config
from gankit.api import load
from gankit.cli import main
from gankit.errors import UserError
from gankit.presets import load_preset
from gankit.training import Trainer
from gankit.training.rejection import Critic, fit_critic, rejection_sample
from tests.conftest import TINY


class LogRatio(nn.Module):
    """A known critic: logit = log(2x), the density ratio of p(x) = 2x to U(0, 1) on [0, 1]."""

    def forward(self, x, labels=None):
        return torch.log(2 * x[:, 0].clamp_min(1e-12))


def uniform_draw(n, rng, label=None):
    x = torch.rand(n, 1, generator=rng)
    return x, (torch.full((n,), label) if label is not None else None)


def test_rejection_turns_proposals_into_the_target_density():
    """G ~ U(0, 1) and the exact ratio 2x: kept samples must follow p(x) = 2x, CDF x^2."""
    critic = Critic(LogRatio(), log_max=math.log(2), acceptance=0.5)
    x = rejection_sample(critic, uniform_draw, 4000, torch.Generator().manual_seed(0)).numpy()[:, 0]
    assert len(x) == 4000
    assert stats.kstest(x, lambda v: np.clip(v, 0, 1) ** 2).pvalue > 0.01
    assert stats.kstest(x, "uniform").pvalue < 1e-6  # and no longer the proposal


def test_rejection_keeps_the_asked_labels_in_order():
    critic = Critic(LogRatio(), log_max=math.log(2), acceptance=0.5)
    labels = torch.arange(30) % 3
    seen = []

    def draw(n, rng, label=None):
        seen.append(label)
        x = torch.rand(n, 1, generator=rng)
        return x + 10 * label, torch.full((n,), label)  # each class lives in its own interval

    class ShiftedRatio(nn.Module):
        def forward(self, x, y):
            return torch.log(2 * (x[:, 0] - 10 * y).clamp_min(1e-12))

    out = rejection_sample(Critic(ShiftedRatio(), math.log(2), 0.5), draw, 30, torch.Generator().manual_seed(1),
                           labels)
    assert set(seen) == {0, 1, 2}
    assert torch.equal(torch.div(out[:, 0], 10, rounding_mode="floor").long(), labels)


def test_a_critic_that_rejects_everything_falls_back_to_gs_samples_with_a_warning():
    class Never(nn.Module):
        def forward(self, x, labels=None):
            return torch.full((len(x),), -1e4)

    with pytest.warns(UserWarning, match="G's own, not filtered"):
        out = rejection_sample(Critic(Never(), 0.0, 1.0), uniform_draw, 5, torch.Generator().manual_seed(0))
    assert out.shape == (5, 1) and ((0 <= out) & (out <= 1)).all()


def test_a_critic_keeping_under_one_percent_is_not_used(tmp_path, monkeypatch, capsys):
    """Training warns and falls back to G alone: scores, `gankit sample` and the API agree."""
    import gankit.training.rejection as rejection_module

    fitted = Critic(LogRatio(), log_max=0.0, acceptance=0.004)
    monkeypatch.setattr(rejection_module, "fit_critic", lambda *args, **kwargs: fitted)
    monkeypatch.setattr(Critic, "from_state", classmethod(lambda cls, state, *a: fitted))
    run = tmp_path / "ring"
    sets = [a for item in TINY + ["train.drs_steps=5", "eval.every=10", "eval.n=100", "model.pack=1"]
            for a in ("--set", item)]
    assert main(["train", "ring8", "--out", str(run), "--quiet", *sets]) == 0
    err = capsys.readouterr().err
    assert "so it is not used: samples and scores are G's own" in err
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in rows if r.get("event") == "warning"] == ["drs_fallback"]
    assert not any(r.get("drs") for r in rows if r.get("eval"))
    assert main(["eval", str(run), "--json", "-n", "100", "--metrics", "modes"]) == 0
    assert json.loads(capsys.readouterr().out)["drs"] is False
    assert load(run).sampler.critic is None
    np.testing.assert_array_equal(load(run).sample(50, seed=1), load(run).sample(50, seed=1, raw=True))


def test_no_preset_fits_a_rejection_critic_by_default():
    from gankit.presets import preset_names

    assert all(load_preset(name).train.drs_steps == 0 for name in preset_names())


def test_the_fitted_critic_estimates_the_log_density_ratio():
    """Real N(0, I), generated N(0, 2^2 I) in 2-D: the critic's logit should approach
    log N(x; 0, I) - log N(x; 0, 4I) = 2 log 2 - 3|x|^2 / 8."""
    cfg = config.with_overrides(load_preset("ring8"), [
        "model.d_hidden=[64, 64]", "train.drs_steps=400", "train.batch_size=256", "optim_d.lr=0.003"])

    def real(n, rng):
        return torch.randn(n, 2, generator=rng), None

    def fake(n, rng, label=None):
        return 2 * torch.randn(n, 2, generator=rng), None

    critic = fit_critic(cfg, (2,), 0, real, fake, torch.device("cpu"), progress=False)
    x = torch.randn(2000, 2, generator=torch.Generator().manual_seed(9)) * 1.2
    truth = 2 * math.log(2) - 3 * (x**2).sum(1) / 8
    estimate = critic.log_ratio(x, None)
    assert torch.corrcoef(torch.stack([truth, estimate]))[0, 1] > 0.95
    assert (estimate - truth).abs().median() < 0.3
    assert 0 < critic.acceptance <= 1 and critic.log_max >= estimate.max() - 1.0


@pytest.fixture(scope="module")
def drs_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("drs") / "ring"
    # an EMA of G and a constant rate: the sampler still moves when a resumed run trains on
    sets = [a for item in TINY + ["train.drs_steps=30", "train.drs_hidden=[256, 256, 256]", "eval.every=10",
                                  "eval.n=300", "model.pack=1", "train.ema_decay=0.999", "train.lr_schedule=constant"]
            for a in ("--set", item)]
    assert main(["train", "ring8", "--out", str(run_dir), "--quiet", *sets]) == 0
    return run_dir


def test_training_fits_the_critic_and_scores_with_it(drs_run):
    rows = [json.loads(line) for line in (drs_run / "metrics.jsonl").read_text().splitlines()]
    fitted = [r for r in rows if r.get("event") == "drs_critic"]
    assert len(fitted) == 1 and 0 < fitted[0]["acceptance"] <= 1
    evals = [r for r in rows if r.get("eval")]
    assert [(r["step"], r.get("drs", False)) for r in evals] == [(10, False), (20, False), (20, True)]
    # the probability view is about D and the live G, which the critic does not change
    assert evals[2]["jsd"] == evals[1]["jsd"] and evals[2]["d_star_error"] == evals[1]["d_star_error"]
    assert evals[2]["mmd2"] != evals[1]["mmd2"]  # while the sampler's scores do change
    assert load(drs_run).sampler.critic is not None


def test_sample_and_eval_use_the_critic_unless_raw(drs_run, tmp_path, capsys):
    for flag, name in (([], "kept"), (["--raw"], "raw")):
        assert main(["sample", str(drs_run), "-n", "200", "--seed", "3", "--out", str(tmp_path / f"{name}.npy"),
                     *flag]) == 0
    kept, raw = np.load(tmp_path / "kept.npy"), np.load(tmp_path / "raw.npy")
    assert kept.shape == raw.shape == (200, 2) and not np.allclose(kept, raw)
    gan = load(drs_run)
    np.testing.assert_array_equal(gan.sample(200, seed=3), kept)  # seeded: reproducible
    np.testing.assert_array_equal(gan.sample(200, seed=3, raw=True), raw)
    capsys.readouterr()
    scores = {}
    for flag in ([], ["--raw"]):
        assert main(["eval", str(drs_run), "--json", "-n", "200", "--metrics", "modes", *flag]) == 0
        scores[bool(flag)] = json.loads(capsys.readouterr().out)
    assert scores[False]["drs"] is True and 0 < scores[False]["drs_acceptance"] <= 1
    assert scores[True]["drs"] is False and "drs_acceptance" not in scores[True]


def test_truncation_needs_raw_where_the_critic_filters(drs_run, tmp_path, capsys):
    """The critic judges G's own noise; truncated draws are refused unless --raw asks for G's samples."""
    out = tmp_path / "t.npy"
    for verb in (["sample", str(drs_run), "-n", "50", "--out", str(out)], ["eval", str(drs_run), "-n", "50"]):
        assert main([*verb, "--truncation", "0.7"]) == 2
        err = capsys.readouterr().err
        assert "--raw" in err and err.count("\n") == 1
    assert not out.exists()
    for flag in ("raw", "live"):
        assert main(["sample", str(drs_run), "-n", "50", "--out", str(out), "--truncation", "0.7", f"--{flag}"]) == 0
        capsys.readouterr()
        assert main(["eval", str(drs_run), "-n", "50", "--metrics", "mmd", "--truncation", "0.7", f"--{flag}",
                     "--json"]) == 0
        cli = json.loads(capsys.readouterr().out)
        api = load(drs_run).evaluate(["mmd"], 50, truncation=0.7, **{flag: True})
        assert cli["drs"] is False and cli["truncation"] == api["truncation"] == 0.7
        assert api["mmd2"] == cli["mmd2"]
    raw, live = (load(drs_run).evaluate(["mmd"], 50, **{flag: True})["mmd2"] for flag in ("raw", "live"))
    assert raw != live  # raw: the EMA copy; live: G as the last step left it
    with pytest.raises(UserError, match="raw=True"):
        load(drs_run).sample(50, truncation=0.7)
    with pytest.raises(UserError, match="at least 10"):
        load(drs_run).evaluate(["mmd"], 3)  # as gankit eval -n 3


def test_resuming_for_more_steps_refits_the_critic(drs_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(drs_run, run)  # the module's run stays as the other tests expect, whatever their order
    trainer = Trainer.resume(run)
    old = trainer.critic.state_dict()["net"]
    trainer.fit(steps=25, progress=False)
    assert trainer.step == 25 and trainer.critic is not None
    new = trainer.critic.state_dict()["net"]
    assert any(not torch.equal(old[k], new[k]) for k in old)


def test_conditional_image_run_keeps_its_labels_under_rejection(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "imgs.npz", images=(rng.random((40, 28, 28)) * 255).astype(np.uint8),
             labels=np.arange(40) % 4)
    cfg = config.with_overrides(load_preset("mnist-cdcgan"), [
        f"data.name=images:{tmp_path / 'imgs.npz'}", "train.steps=2", "train.batch_size=8", "model.conv_width=4",
        "train.snapshot_every=0", "train.drs_steps=3"])
    Trainer(cfg, tmp_path / "run").fit(progress=False)
    assert main(["sample", str(tmp_path / "run"), "-n", "12", "--out", str(tmp_path / "s.npz")]) == 0
    with np.load(tmp_path / "s.npz") as f:
        assert f["samples"].shape == (12, 28, 28, 1) and list(f["labels"]) == [i % 4 for i in range(12)]
    assert main(["sample", str(tmp_path / "run"), "-n", "5", "--label", "2", "--out", str(tmp_path / "t.npz")]) == 0
    with np.load(tmp_path / "t.npz") as f:
        assert list(f["labels"]) == [2] * 5


def test_a_stop_signal_ends_the_critic_fit_without_a_critic():
    cfg = config.with_overrides(load_preset("ring8"), ["train.drs_steps=1000"])
    draws = []

    def real(n, rng):
        draws.append(n)
        return torch.randn(n, 2, generator=rng), None

    def fake(n, rng, label=None):
        return torch.randn(n, 2, generator=rng), None

    assert fit_critic(cfg, (2,), 0, real, fake, torch.device("cpu"), False, should_stop=lambda: len(draws) >= 3) is None
    assert len(draws) == 3


def test_live_samples_the_last_iterate_without_ema_or_critic(drs_run, tmp_path, capsys):
    """--live: G as training left it (the run has an EMA copy and a critic; both are skipped)."""
    assert main(["sample", str(drs_run), "-n", "200", "--seed", "3", "--out", str(tmp_path / "live.npy"),
                 "--live"]) == 0
    live = np.load(tmp_path / "live.npy")
    trainer = Trainer.resume(drs_run)
    assert trainer.ema is not None and trainer.critic is not None
    np.testing.assert_allclose(live, trainer.evaluation.live_samples(200, 3), rtol=1e-6, atol=1e-6)
    assert not np.allclose(live, load(drs_run).sample(200, seed=3, raw=True))  # the EMA copy differs
    np.testing.assert_array_equal(load(drs_run, live=True).sample(200, seed=3), live)
    capsys.readouterr()
    assert main(["eval", str(drs_run), "--json", "-n", "200", "--metrics", "modes", "--live"]) == 0
    assert json.loads(capsys.readouterr().out)["drs"] is False


def test_a_critic_fitted_with_batch_norm_by_an_earlier_version_is_refitted_not_misread():
    from torch import nn

    from gankit import config
    from gankit.errors import UserError
    from gankit.presets import load_preset
    from gankit.training.rejection import Critic, build_critic

    cfg = config.with_overrides(load_preset("quadratic"), ["model.d_hidden=[8]"])
    old = build_critic(cfg, (2,), 0).state_dict()
    old["body.1.running_mean"] = torch.zeros(8)  # as a batch-norm layer of the old layout would add
    with pytest.raises(UserError, match="gankit resume RUN"):
        Critic.from_state({"net": old, "log_max": 0.0, "acceptance": 1.0}, cfg, (2,), 0)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in build_critic(cfg, (2,), 0).modules())
