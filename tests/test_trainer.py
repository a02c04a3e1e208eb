"""The training loop: run directory contents, logged values, snapshots, EMA, exact resume."""
import json

import numpy as np
import pytest
import torch

from gankit import config
from gankit.training import Trainer
from gankit.training.checkpoint import load_checkpoint


def metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_run_writes_the_run_directory(tiny_cfg, tmp_path):
    Trainer(tiny_cfg, tmp_path).fit(progress=False)
    assert config.load(tmp_path / "config.toml") == tiny_cfg
    rows = metrics(tmp_path)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    for key in ("d_loss", "g_loss", "d_real", "d_fake", "seconds"):
        assert all(np.isfinite(r[key]) for r in rows), key
    assert all(0 <= r["d_real"] <= 1 and 0 <= r["d_fake"] <= 1 for r in rows)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == \
        ["latest.pt", "step-000000.pt", "step-000010.pt", "step-000020.pt"]
    assert sorted(p.name for p in (tmp_path / "snapshots").iterdir()) == \
        ["step-000001.npz", "step-000010.npz", "step-000020.npz"]


def test_snapshot_holds_the_three_moments_of_a_step(tiny_cfg, tmp_path):
    Trainer(tiny_cfg, tmp_path).fit(progress=False)
    snap = np.load(tmp_path / "snapshots" / "step-000010.npz")
    n = tiny_cfg.viz.n_points
    for key in ("feat_real_d0", "feat_fake_d0_g0", "feat_real_d1", "feat_fake_d1_g0", "feat_fake_d1_g1"):
        assert snap[key].shape == (n, 2), key
    assert snap["real"].shape == snap["fake_g0"].shape == snap["fake_g1"].shape == (n, 2)
    # The D update changes D's view of the same points; the G update moves only the generated ones.
    assert not np.allclose(snap["feat_real_d0"], snap["feat_real_d1"])
    assert not np.allclose(snap["feat_fake_d1_g0"], snap["feat_fake_d1_g1"])
    assert snap["grid_d"].shape == (12, 12) and 0 <= snap["grid_d"].min() <= snap["grid_d"].max() <= 1


def test_checkpoints_keep_only_the_newest(tiny_cfg, tmp_path):
    cfg = config.replace(tiny_cfg, "train", steps=50, checkpoint_every=5, keep_checkpoints=2)
    Trainer(cfg, tmp_path).fit(progress=False)
    names = sorted(p.name for p in (tmp_path / "checkpoints").glob("step-*.pt"))
    assert names == ["step-000045.pt", "step-000050.pt"]
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["step"] == 50


def test_reuse_batch_draws_one_batch_per_step(tiny_cfg):
    reuse = Trainer(config.replace(tiny_cfg, "train", n_d=3, n_g=3, reuse_batch=True), "unused")
    fresh = Trainer(config.replace(tiny_cfg, "train", n_d=3, n_g=3, reuse_batch=False), "unused")
    before_r, before_f = reuse.data_rng.get_state(), fresh.data_rng.get_state()
    reuse.train_step()
    fresh.train_step()
    drawn = [torch.Generator().manual_seed(0) for _ in range(2)]
    drawn[0].set_state(before_r)
    drawn[1].set_state(before_f)
    # One real batch consumed vs three: the data generators end in different places.
    reuse.source.sample(32, drawn[0])
    assert torch.equal(drawn[0].get_state(), reuse.data_rng.get_state())
    assert not torch.equal(fresh.data_rng.get_state(), reuse.data_rng.get_state())


def test_ema_generator_is_an_average(tiny_cfg, tmp_path):
    trainer = Trainer(config.replace(tiny_cfg, "train", ema_decay=0.9), tmp_path).fit(progress=False)
    g, ema = trainer.g.state_dict(), trainer.sampler_g.state_dict()
    assert any(not torch.equal(g[k], ema[k]) for k in g)
    assert trainer.sampler_g is trainer.ema.module


def test_resume_continues_bit_for_bit(tiny_cfg, tmp_path):
    cfg = config.replace(tiny_cfg, "train", ema_decay=0.5)
    straight = Trainer(cfg, tmp_path / "a").fit(steps=20, progress=False)
    Trainer(cfg, tmp_path / "b").fit(steps=10, progress=False)
    resumed = Trainer.resume(tmp_path / "b").fit(steps=20, progress=False)
    for key, value in straight.g.state_dict().items():
        assert torch.equal(value, resumed.g.state_dict()[key]), key
    for key, value in straight.sampler_g.state_dict().items():
        assert torch.equal(value, resumed.sampler_g.state_dict()[key]), key
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in metrics(tmp_path / "a")]
    assert strip == [{k: v for k, v in r.items() if k != "seconds"} for r in metrics(tmp_path / "b")]


def test_resume_drops_log_lines_written_after_the_checkpoint(tiny_cfg, tmp_path):
    Trainer(tiny_cfg, tmp_path).fit(steps=10, progress=False)
    with open(tmp_path / "metrics.jsonl", "a") as fh:  # as if the run died after logging step 15
        fh.write(json.dumps({"step": 15, "d_loss": 0}) + "\n" + '{"step": 2')
    Trainer.resume(tmp_path).fit(steps=20, progress=False)
    assert [r["step"] for r in metrics(tmp_path)] == [5, 10, 15, 20]


def test_rmsprop_average_can_start_at_one_like_tensorflow(tiny_cfg):
    cfg = config.with_overrides(tiny_cfg, ["optim_d.name=rmsprop", "optim_d.rms_init=1.0"])
    trainer = Trainer(cfg, "unused")
    weight = next(trainer.d.parameters())
    assert torch.equal(trainer.opt_d.state[weight]["square_avg"], torch.ones_like(weight))
    trainer.train_step()
    assert trainer.opt_d.state[weight]["square_avg"].min() > 0.5  # 0.99 * 1 + 0.01 * g^2


@pytest.mark.parametrize("setting", ["model.pack=4", "loss.name=wgan-gp", "model.spectral_norm=true",
                                     "loss.instance_noise=0.1", "loss.r1_gamma=1.0", "model.d_feature_dim=0",
                                     "optim_g.name=sgd", "data.name=ring8"])
def test_stabilisers_train_and_snapshot(tiny_cfg, tmp_path, setting):
    cfg = config.with_overrides(tiny_cfg, [setting, "train.steps=10"])
    Trainer(cfg, tmp_path).fit(progress=False)
    assert np.isfinite(metrics(tmp_path)[-1]["d_loss"])
    assert (tmp_path / "snapshots" / "step-000010.npz").exists()


def test_ema_of_g_leaves_training_untouched(tiny_cfg, tmp_path):
    """The EMA copy only changes what is sampled: D, G and the logged losses are those of a run without it."""
    plain = Trainer(config.with_overrides(tiny_cfg, ["train.ema_decay=0"]), tmp_path / "plain").fit(progress=False)
    ema = Trainer(config.with_overrides(tiny_cfg, ["train.ema_decay=0.9"]), tmp_path / "ema").fit(progress=False)
    for a, b in zip([*plain.g.parameters(), *plain.d.parameters()], [*ema.g.parameters(), *ema.d.parameters()]):
        assert torch.equal(a, b)
    losses = [(r["d_loss"], r["g_loss"]) for r in map(json.loads, (tmp_path / "plain" / "metrics.jsonl").open())
              if "d_loss" in r]
    assert losses == [(r["d_loss"], r["g_loss"]) for r in map(json.loads, (tmp_path / "ema" / "metrics.jsonl").open())
                      if "d_loss" in r]
    assert not torch.equal(next(ema.sampler_g.parameters()), next(ema.g.parameters()))


def test_bf16_autocast_trains_in_bfloat16(tiny_cfg, tmp_path):
    """train.precision = bf16 runs the forward passes in bfloat16 (so the run differs from float32)
    while the weights stay float32 and the losses finite."""
    runs = {p: Trainer(config.with_overrides(tiny_cfg, [f"train.precision={p}"]), tmp_path / p).fit(progress=False)
            for p in ("fp32", "bf16")}
    assert all(p.dtype == torch.float32 for p in runs["bf16"].g.parameters())
    rows = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").open() if "d_loss" in line]
    assert rows and all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows)
    assert not torch.equal(next(runs["fp32"].g.parameters()), next(runs["bf16"].g.parameters()))
    with runs["bf16"]._autocast():
        assert runs["bf16"].g(torch.zeros(4, tiny_cfg.model.z_dim)).dtype == torch.bfloat16


def test_share_fake_is_the_same_update_with_one_g_forward_fewer(tiny_cfg, tmp_path):
    """With reuse_batch both versions give G's update the D batch's z, so sharing the generated batch
    (and its graph) must give the same weights, while G runs once fewer a step."""
    base = ["train.reuse_batch=true", "train.n_g=2", "train.snapshot_every=0"]
    runs, forwards = {}, {}
    for share in ("false", "true"):
        cfg = config.with_overrides(tiny_cfg, [*base, f"train.share_fake={share}"])
        trainer = Trainer(cfg, tmp_path / share)
        calls = []
        trainer.g.register_forward_hook(lambda *_: calls.append(1))
        runs[share], forwards[share] = trainer.fit(progress=False), len(calls)
    for a, b in zip(runs["false"].g.parameters(), runs["true"].g.parameters()):
        torch.testing.assert_close(a, b)
    steps = tiny_cfg.train.steps
    assert forwards["false"] - forwards["true"] == steps  # 3 forwards a step become 2
