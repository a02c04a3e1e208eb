"""The training loop: run directory contents, logged values, snapshots, EMA, exact resume."""
import json

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gankit import config
from gankit.training import Trainer
from gankit.training.checkpoint import load_checkpoint
from tests.conftest import power_iterate, sigma


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


def test_ema_decay_ramps_up_from_the_first_steps(tiny_cfg, tmp_path):
    """ema_t = d_t ema_(t-1) + (1 - d_t) g_t with d_t = min(decay, (1 + t) / (10 + t)), started at G's
    first-step weights: a short run's average is not stuck near G's random initial weights."""
    trainer = Trainer(config.replace(tiny_cfg, "train", ema_decay=0.999, steps=30), tmp_path)
    expected = None
    for t in range(30):
        trainer.train_step(log=False)
        trainer.step += 1  # as the loop counts steps
        weights = [p.detach().clone() for p in trainer.g.parameters()]
        if expected is None:
            expected = weights
        else:
            d = min(0.999, (1 + t) / (10 + t))
            expected = [d * e + (1 - d) * w for e, w in zip(expected, weights)]
    for got, want in zip(trainer.ema.module.parameters(), expected):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("schedule", ["alternating", "shared", "simultaneous"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_resume_continues_bit_for_bit(tiny_cfg, tmp_path, schedule, precision):
    cfg = config.with_overrides(tiny_cfg, ["train.ema_decay=0.5", f"train.schedule={schedule}",
                                           f"train.precision={precision}", "model.d_dropout=0.2",
                                           "model.z_categories=3", "loss.info_weight=0.5",
                                           "model.code_hidden=4"])  # with InfoGAN's head (a hidden layer)
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


# --------------------------------------------------------------------------- each stabiliser takes effect

LINEAR_D = ["model.d_hidden=[]", "model.d_feature_dim=0"]  # D(x) = w.x + b: grad D = w everywhere


def step_with_weight(tiny_cfg, settings, w=(2.0, 0.0)):
    trainer = Trainer(config.with_overrides(tiny_cfg, LINEAR_D + settings), "unused")
    with torch.no_grad():
        trainer.d.logit.weight.copy_(torch.tensor([w]))
    return trainer.train_step()[0]


def test_training_with_wgan_gp_adds_the_weighted_penalty(tiny_cfg):
    on = step_with_weight(tiny_cfg, ["loss.name=wgan-gp", "loss.gp_weight=10"])
    off = step_with_weight(tiny_cfg, ["loss.name=wgan-gp", "loss.gp_weight=0"])
    assert on["gp"].item() == pytest.approx((2.0 - 1.0) ** 2, rel=1e-5)  # (|w| - 1)^2
    assert "gp" not in off
    assert (on["d_loss"] - off["d_loss"]).item() == pytest.approx(10 * 1.0, rel=1e-5)


def test_training_with_r1_adds_gamma_over_two_times_the_squared_gradient(tiny_cfg):
    on = step_with_weight(tiny_cfg, ["loss.r1_gamma=3.0"], w=(0.0, 2.0))
    off = step_with_weight(tiny_cfg, [], w=(0.0, 2.0))
    assert on["r1"].item() == pytest.approx(4.0, rel=1e-5)  # |w|^2
    assert "r1" not in off
    assert (on["d_loss"] - off["d_loss"]).item() == pytest.approx(0.5 * 3.0 * 4.0, rel=1e-5)


def test_spectral_norm_setting_gives_the_trained_d_unit_spectral_norms(tiny_cfg):
    trainer = Trainer(config.with_overrides(tiny_cfg, ["model.spectral_norm=true"]), "unused")
    layers = [m for m in trainer.d.modules() if isinstance(m, nn.Linear)]
    assert len(layers) == 4 and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not any(parametrize.is_parametrized(m) for m in trainer.g.modules())  # D only
    trainer.train_step()
    with torch.no_grad():  # triple the raw weights: without the normalisation sigma would triple too
        for m in layers:
            m.parametrizations.weight.original.mul_(3.0)
    power_iterate(trainer.d, torch.randn(32, 2))
    for m in layers:
        assert sigma(m) == pytest.approx(1.0, abs=0.02)
        assert torch.linalg.matrix_norm(m.parametrizations.weight.original.detach(), 2).item() > 1.2

def test_packed_d_in_training_sees_pack_samples_per_input(tiny_cfg):
    trainer = Trainer(config.with_overrides(tiny_cfg, ["model.pack=4"]), "unused")
    rows, logits = [], []
    trainer.d.body[0].register_forward_pre_hook(lambda m, args: rows.append(tuple(args[0].shape)))
    trainer.d.register_forward_hook(lambda m, args, out: logits.append(tuple(out.shape)))
    trainer.train_step()
    batch, pack, dim = 32, 4, 2
    # D update: real and generated batches in one pass; G update: the generated batch alone
    assert rows == [(2 * batch // pack, pack * dim), (batch // pack, pack * dim)]
    assert logits == [(2 * batch // pack,), (batch // pack,)]

def test_instance_noise_setting_perturbs_what_d_sees_in_training(tiny_cfg):
    trainer = Trainer(config.with_overrides(tiny_cfg, ["loss.instance_noise=0.1"]), "unused")
    seen = []
    trainer.d.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    rng = torch.Generator()
    rng.set_state(trainer.data_rng.get_state())
    clean, _ = trainer._draw_real_with(32, rng)  # the real batch the step is about to draw
    trainer.train_step()
    noise = seen[0][:32] - clean  # D's first pass: [real; fake], both noised
    assert noise.std().item() == pytest.approx(0.1, rel=0.3)

def _snapshot_checks():
    return {
        # D judges groups of 4: 64 fixed points give 16 feature rows
        "model.pack=4": lambda t, s: s["feat_real_d0"].shape == (16, 2) and t.d.pack == 4,
        # no feature layer: the features are the last hidden layer (16 wide)
        "model.d_feature_dim=0": lambda t, s: isinstance(t.d.feature, nn.Identity) and s["feat_real_d0"].shape == (64, 16),
        "optim_g.name=sgd": lambda t, s: type(t.opt_g) is torch.optim.SGD and isinstance(t.opt_d, torch.optim.Adam),
        # ring8's fixed real points lie on the unit circle (std 0.01), in data units
        "data.name=ring8": lambda t, s: np.allclose(np.linalg.norm(s["real"], axis=1), 1.0, atol=0.05),
    }


@pytest.mark.parametrize("setting", list(_snapshot_checks()))
def test_setting_takes_effect_and_snapshots(tiny_cfg, tmp_path, setting):
    trainer = Trainer(config.with_overrides(tiny_cfg, [setting, "train.steps=10"]), tmp_path).fit(progress=False)
    with np.load(tmp_path / "snapshots" / "step-000010.npz") as snap:
        assert _snapshot_checks()[setting](trainer, snap)


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


def test_an_annealed_mode_seeking_weight_is_logged_as_it_falls(tiny_cfg, tmp_path):
    cfg = config.with_overrides(tiny_cfg, ["train.steps=40", "train.log_every=10", "loss.mode_seeking=0.5",
                                           "loss.mode_seeking_anneal=20"])
    Trainer(cfg, tmp_path).fit(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").open() if "d_loss" in line]
    assert [(r["step"], r["mode_seeking_weight"]) for r in rows] == [(10, 0.25), (20, 0.0), (30, 0.0), (40, 0.0)]


def test_bf16_autocast_trains_in_bfloat16(tiny_cfg, tmp_path):
    """train.precision = bf16 runs the forward passes in bfloat16 (so the run differs from float32)
    while the weights stay float32 and the losses finite."""
    runs = {p: Trainer(config.with_overrides(tiny_cfg, [f"train.precision={p}"]), tmp_path / p).fit(progress=False)
            for p in ("fp32", "bf16")}
    assert all(p.dtype == torch.float32 for p in runs["bf16"].g.parameters())
    rows = [json.loads(line) for line in (tmp_path / "bf16" / "metrics.jsonl").open() if "d_loss" in line]
    assert rows and all(np.isfinite(r["d_loss"]) and np.isfinite(r["g_loss"]) for r in rows)
    assert not torch.equal(next(runs["fp32"].g.parameters()), next(runs["bf16"].g.parameters()))
    with runs["bf16"].precision.autocast():
        assert runs["bf16"].g(torch.zeros(4, tiny_cfg.model.z_dim)).dtype == torch.bfloat16


@pytest.mark.parametrize("schedule", ["alternating", "shared", "simultaneous"])
@pytest.mark.parametrize("net", ["mlp", "dcgan"])
def test_bf16_weight_buffers_give_autocasts_arithmetic_bit_for_bit(tiny_cfg, tmp_path, schedule, net, monkeypatch):
    """On a CPU, bfloat16 steps run on bfloat16 copies of the weights cast once per update: the
    same numbers as autocast casting them at every forward, and float32 weights outside the step.
    The 28x28 DCGAN's phase layers run on the buffers only, with other rounding (test_models.py
    compares them with the stock layers), so both runs here take the stock layers."""
    from gankit.data.images import ImageSource
    from gankit.models import phase_conv

    monkeypatch.setattr(phase_conv, "_phases_apply", lambda layer, x: False)

    images = ImageSource(np.random.default_rng(0).integers(0, 256, (32, 1, 28, 28), dtype=np.uint8), None, "noise")
    sets = ["train.precision=bf16", f"train.schedule={schedule}", "train.steps=6", "train.ema_decay=0.5",
            "model.g_output=tanh", "model.z_categories=3", "loss.info_weight=0.5",
            "train.adam_kernel=torch"]  # both runs on PyTorch's Adam (test_adam_kernel.py compares the kernel)
    if net == "dcgan":
        sets += ["model.name=dcgan", "model.conv_width=4", "model.z_dim=8", "model.d_batch_norm=true"]
    runs, dtypes = {}, []
    for buffers in (True, False):
        trainer = Trainer(config.with_overrides(tiny_cfg, sets), tmp_path / str(buffers), source=images)
        assert trainer.precision.copies  # on by default here: bfloat16 on a CPU, image data, one process
        if buffers:
            trainer.g.register_forward_hook(lambda g, *_: dtypes.append(next(g.parameters()).dtype))
        else:
            trainer.precision.copies.clear()  # autocast alone
        runs[buffers] = trainer.fit(progress=False)
    assert set(dtypes) == {torch.bfloat16}
    for part in ("g", "d", "sampler_g"):
        fast, plain = getattr(runs[True], part).state_dict(), getattr(runs[False], part).state_dict()
        for key, value in plain.items():
            assert fast[key].dtype == value.dtype and torch.equal(fast[key], value), (part, key)
    assert all(p.grad is None or p.grad.dtype == torch.float32 for p in runs[True].d.parameters())


def test_precision_auto_is_bf16_only_for_images_on_hardware_that_has_it_and_runs_it_faster(monkeypatch):
    from gankit.training import precision as precision_mod
    from gankit.training.precision import resolve_precision

    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu, True, 1).name == "fp32" and resolve_precision("bf16", cpu, False, 1).name == "bf16"
    assert resolve_precision("auto", cpu, False, 1).name == "fp32"  # vectors: small networks, raw units
    for amx, avx512_bf16, speedup, expected in ((True, False, 1.8, "bf16"), (False, True, 1.3, "bf16"),
                                                (False, True, 0.74, "fp32"), (True, False, 1.05, "fp32"),
                                                (False, False, 2.0, "fp32")):
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda amx=amx: amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(precision_mod, "cpu_bf16_speedup", lambda threads, s=speedup: s)
        native = amx or avx512_bf16
        choice = resolve_precision("auto", cpu, True, 2)
        assert choice.name == expected and choice.speedup == (speedup if native else None), (amx, avx512_bf16)
        assert (choice.note() is not None) == native
        # a resumed run keeps a choice made on a CPU where bfloat16 is native here; else auto resolves again
        for saved in ("bf16", "fp32"):
            kept = resolve_precision("auto", cpu, True, 2, {"name": saved, "device": "cpu"})
            assert kept.name == (saved if native else "fp32") and kept.speedup is None
        on_a_gpu = resolve_precision("auto", cpu, True, 2, {"name": "bf16", "device": "cuda"})
        assert on_a_gpu == choice  # a choice made on a GPU says nothing about this CPU


def test_precision_auto_on_gpus_is_bf16_where_they_have_bfloat16_units():
    from gankit.training.precision import cuda_precision

    assert [cuda_precision(c) for c in ((9, 0), (8, 6), (8, 0), (7, 5), (7, 0), (6, 1))] == \
        ["bf16", "bf16", "bf16", "fp32", "fp32", "fp32"]  # fp16 (capability 7) only when asked for


def test_precision_auto_asks_a_gpu_its_compute_capability(monkeypatch):
    from gankit.training.precision import resolve_precision

    gpu = torch.device("cuda")
    for capability, expected in (((8, 0), "bf16"), ((7, 5), "fp32")):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None, c=capability: c)
        assert resolve_precision("auto", gpu, True, 1).name == expected
        assert resolve_precision("auto", gpu, False, 1).name == "fp32"  # vector data
    assert resolve_precision("fp16", gpu, True, 1).name == "fp16"


@pytest.mark.parametrize("optimiser", ["adam", "rmsprop"])  # fused Adam's own skip; the scaler's unscale_
def test_fp16_scales_each_networks_loss_and_skips_a_step_whose_gradients_overflow(tiny_cfg, tmp_path, optimiser):
    """fp16: each optimiser has its loss scaler; a step whose float16 gradients overflowed leaves the
    weights and the optimiser's state as they were and halves that scale, and the run goes on (the
    guards see finite weights); the scales are saved with the run, and a resume continues bit for bit."""
    cfg = config.with_overrides(tiny_cfg, ["train.precision=fp16", f"optim_d.name={optimiser}"])
    trainer = Trainer(cfg, tmp_path / "a")
    scalers = trainer.precision.scalers
    assert len(scalers) == 2 and trainer.precision.autocast().fast_dtype == torch.float16
    trainer.fit(steps=3, progress=False)
    scale = {id(opt): scalers[id(opt)].get_scale() for opt in (trainer.opt_g, trainer.opt_d)}
    d_scaler = scalers[id(trainer.opt_d)]
    d_scaler.update(new_scale=torch.tensor(2.0 ** 120))  # far past float16's range: D's gradients overflow
    d_before = [p.detach().clone() for p in trainer.d.parameters()]
    d_steps = [float(trainer.opt_d.state[p]["step"]) for p in trainer.d_params]
    trainer.train_step(log=False)
    assert all(torch.equal(a, b) for a, b in zip(d_before, trainer.d.parameters()))
    assert [float(trainer.opt_d.state[p]["step"]) for p in trainer.d_params] == d_steps
    assert d_scaler.get_scale() == 2.0 ** 119
    assert scalers[id(trainer.opt_g)].get_scale() == scale[id(trainer.opt_g)]  # G's scale: its own
    trainer.step += 1
    trainer.fit(steps=6, progress=False)  # D's scale still far too large: its steps are all skipped
    resumed = Trainer.resume(tmp_path / "a")
    saved = {id(trainer.opt_g): "g", id(trainer.opt_d): "d"}
    for opt, twin in ((trainer.opt_g, resumed.opt_g), (trainer.opt_d, resumed.opt_d)):
        assert resumed.precision.scalers[id(twin)].state_dict() == scalers[id(opt)].state_dict(), saved[id(opt)]
    trainer.fit(steps=10, progress=False)
    resumed.fit(steps=10, progress=False)  # with a fresh scale instead, D would have stepped
    for net, twin in ((trainer.g, resumed.g), (trainer.d, resumed.d)):
        assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), twin.state_dict().values()))


def test_cpu_bf16_probe_times_both_precisions_and_leaves_the_process_as_it_was(monkeypatch, tmp_path):
    """The probe's ratio is float32's time over bfloat16's, timed on the run's thread count; the
    thread count and PyTorch's global random stream (dropout's) are as before, so a seeded run is
    the same whether the probe ran or not."""
    from gankit.training import precision as precision_mod

    seen = []

    def fake_seconds(dtype):
        seen.append((dtype, torch.get_num_threads()))
        torch.rand(3)  # building layers draws their weights from the global stream
        return {torch.float32: 2.0, torch.bfloat16: 1.0}[dtype]

    monkeypatch.setattr(precision_mod, "_layer_seconds", fake_seconds)
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path))  # not this machine's record: time it here
    precision_mod.cpu_bf16_speedup.cache_clear()
    threads, rng = torch.get_num_threads(), torch.get_rng_state()
    other = 2 if threads == 1 else 1
    try:
        assert precision_mod.cpu_bf16_speedup(other) == 2.0
    finally:
        precision_mod.cpu_bf16_speedup.cache_clear()
    assert {dtype for dtype, _ in seen} == {torch.float32, torch.bfloat16} and {n for _, n in seen} == {other}
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), rng)


def test_cpu_bf16_probe_is_timed_once_per_machine_and_thread_count(monkeypatch, tmp_path):
    """The probe's ratio is kept in the cache folder, so every later run on this machine (a new
    process) makes the same choice however loaded the machine is when it starts; another thread
    count is timed on its own; a damaged record is timed again and rewritten."""
    from gankit.training import precision as precision_mod

    timings = {torch.float32: 3.0, torch.bfloat16: 2.0}
    timed = []

    def fake_seconds(dtype):
        timed.append(dtype)
        return timings[dtype]

    monkeypatch.setattr(precision_mod, "_layer_seconds", fake_seconds)
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "not" / "made" / "yet"))  # a fresh machine's
    record = tmp_path / "not" / "made" / "yet" / precision_mod.PROBE_FILE

    def probe(threads):  # as a new process would: nothing remembered in memory
        precision_mod.cpu_bf16_speedup.cache_clear()
        try:
            return precision_mod.cpu_bf16_speedup(threads)
        finally:
            precision_mod.cpu_bf16_speedup.cache_clear()

    assert probe(1) == 1.5 and len(timed) == 2 * precision_mod.PROBE_ROUNDS
    timings[torch.float32] = 1.0  # a later start, timed on a busy moment, would say 0.5x
    assert probe(1) == 1.5 and len(timed) == 2 * precision_mod.PROBE_ROUNDS  # read, not timed
    assert probe(2) == 0.5 and len(timed) == 4 * precision_mod.PROBE_ROUNDS  # another thread count: timed
    kept = json.loads(record.read_text())
    assert sorted(kept.values()) == [0.5, 1.5] and all(precision_mod.cpu_identity() in key for key in kept)
    record.write_text("{not json")
    assert probe(1) == 0.5 and list(json.loads(record.read_text()).values()) == [0.5]  # timed again, rewritten
    key = next(iter(json.loads(record.read_text())))
    for bad in ("true", "Infinity", "-1", '"fast"'):  # not a ratio: timed again
        record.write_text(f'{{"{key}": {bad}}}')
        assert probe(1) == 0.5


def _probed_image_run(tmp_path, tiny_cfg, monkeypatch, speedup):
    from gankit.data.images import ImageSource
    from gankit.training import precision as precision_mod

    images = ImageSource(np.random.default_rng(0).integers(0, 256, (32, 1, 28, 28), dtype=np.uint8), None, "noise")
    cfg = config.with_overrides(tiny_cfg, ["model.name=dcgan", "model.conv_width=4", "model.z_dim=8",
                                           "model.g_output=tanh", "train.precision=auto", "train.steps=4"])
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(precision_mod, "cpu_bf16_speedup", lambda threads: speedup)
    monkeypatch.setattr("gankit.training.trainer.make_source", lambda data: images)
    return Trainer(cfg, tmp_path)


def test_resume_keeps_the_precision_auto_chose(tiny_cfg, tmp_path, monkeypatch):
    """A probe that would time otherwise after a restart does not change a run's arithmetic: the
    checkpoint records what auto resolved to, and a resume on the same hardware keeps it; the
    probe's measurement is in the run's record."""
    from gankit.training import precision as precision_mod

    started = _probed_image_run(tmp_path, tiny_cfg, monkeypatch, 1.5).fit(steps=2, progress=False)
    assert started.precision.bf16
    noted = [r for r in metrics(tmp_path) if r.get("event") == "precision"]
    assert [(r["step"], r["precision"], r["bf16_speedup"]) for r in noted] == [(0, "bf16", 1.5)]
    monkeypatch.setattr(precision_mod, "cpu_bf16_speedup", lambda threads: 0.9)  # timed otherwise now
    assert not _probed_image_run(tmp_path / "new", tiny_cfg, monkeypatch, 0.9).precision.bf16
    assert Trainer.resume(tmp_path).precision.bf16


def test_checkpoints_from_before_the_probe_resume_in_bf16_on_cpus_with_bf16_instructions(tiny_cfg, tmp_path,
                                                                                       monkeypatch):
    """Earlier versions' auto gave bf16 on every CPU with bfloat16 instructions and saved no choice."""
    from gankit.training import checkpoint as ckpt

    _probed_image_run(tmp_path, tiny_cfg, monkeypatch, 0.5).fit(steps=2, progress=False)
    file = ckpt.find_checkpoint(tmp_path)
    state = ckpt.load_checkpoint(file)
    assert state.pop("precision") == {"name": "fp32", "device": "cpu"}
    state["checksum"] = ckpt.content_digest(state)  # as those versions wrote it: without the key
    torch.save(state, file)
    assert Trainer.resume(tmp_path).precision.bf16


# --------------------------------------------------------------------------- update schedules

def test_simultaneous_step_is_the_tf_tutorials_step(tiny_cfg):
    """One G forward, one D pass: D steps on its loss, G on its loss through the D of before D's step."""
    import copy

    import torch.nn.functional as F

    cfg = config.with_overrides(tiny_cfg, ["train.schedule=simultaneous", "train.precision=fp32"])
    trainer = Trainer(cfg, "unused")
    g, d = copy.deepcopy(trainer.g), copy.deepcopy(trainer.d)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.optim_g.lr, betas=(cfg.optim_g.beta1, cfg.optim_g.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.optim_d.lr, betas=(cfg.optim_d.beta1, cfg.optim_d.beta2))
    rng_data, rng_noise = torch.Generator(), torch.Generator()
    rng_data.set_state(trainer.data_rng.get_state())
    rng_noise.set_state(trainer.noise_rng.get_state())
    real = trainer.norm.to_model(trainer.source.sample(cfg.train.batch_size, rng_data))
    fake = g(torch.rand(cfg.train.batch_size, cfg.model.z_dim, generator=rng_noise) * 2 - 1)
    real_logits, fake_logits = d(real), d(fake)
    d_loss = F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()
    g_loss = F.softplus(-fake_logits).mean()
    d_grads = torch.autograd.grad(d_loss, list(d.parameters()), retain_graph=True)
    g_grads = torch.autograd.grad(g_loss, list(g.parameters()))
    for p, grad in [*zip(d.parameters(), d_grads), *zip(g.parameters(), g_grads)]:
        p.grad = grad
    opt_d.step()
    opt_g.step()
    trainer.train_step()
    for mine, ref in [*zip(trainer.d.parameters(), d.parameters()), *zip(trainer.g.parameters(), g.parameters())]:
        torch.testing.assert_close(mine, ref, rtol=1e-5, atol=1e-6)


def test_simultaneous_needs_one_update_of_each(tiny_cfg):
    from gankit.errors import UserError

    with pytest.raises(UserError, match="n_d = train.n_g = 1"):
        Trainer(config.with_overrides(tiny_cfg, ["train.schedule=simultaneous", "train.n_d=2"]), "unused")


def test_g_update_computes_no_gradient_for_d(tiny_cfg):
    """D's gradients when G steps are exactly those D stepped on: G's backward added nothing to them."""
    trainer = Trainer(tiny_cfg, "unused")
    seen = {}
    trainer.opt_d.register_step_post_hook(lambda opt, *_: seen.update(d=[p.grad.clone() for p in trainer.d_params]))
    trainer.opt_g.register_step_pre_hook(lambda opt, *_: seen.update(at_g=[p.grad for p in trainer.d_params]))
    trainer.train_step()
    assert all(torch.equal(a, b) for a, b in zip(seen["d"], seen["at_g"]))


def test_dcgan_convolutions_run_channels_last(tiny_cfg):
    from gankit.data.images import ImageSource

    images = ImageSource(np.zeros((8, 1, 28, 28), np.uint8), None, "blank")
    cfg = config.with_overrides(tiny_cfg, ["model.name=dcgan", "model.conv_width=4", "model.z_dim=8",
                                           "model.g_output=tanh"])
    trainer = Trainer(cfg, "unused", source=images)
    conv = next(m for m in trainer.d.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert trainer.draw_real()[0].is_contiguous(memory_format=torch.channels_last)


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


# --------------------------------------------------------------------------- what snapshots and samplers may not change

@pytest.mark.parametrize("setting", ["model.g_batch_norm=true", "model.d_dropout=0.5"])
def test_snapshots_leave_training_bit_identical(tiny_cfg, tmp_path, setting):
    """The article's views run G and D without moving batch-norm statistics or drawing dropout masks."""
    runs = []
    for every in (0, 1):
        cfg = config.with_overrides(tiny_cfg, [setting, f"train.snapshot_every={every}"])
        runs.append(Trainer(cfg, tmp_path / f"every-{every}").fit(progress=False))
    assert list((tmp_path / "every-1" / "snapshots").glob("step-*.npz"))
    for a, b in ((runs[0].g, runs[1].g), (runs[0].d, runs[1].d)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name


def test_ema_generator_samples_with_batch_norm_measured_for_its_own_weights(tiny_cfg, tmp_path):
    import gankit

    cfg = config.with_overrides(tiny_cfg, ["model.g_batch_norm=true", "train.ema_decay=0.9",
                                           "model.g_hidden=[16, 16, 16]"])
    trainer = Trainer(cfg, tmp_path).fit(progress=False)
    averaged = trainer.ema.module
    sampler = trainer.sampler_g
    norm_avg = [m for m in averaged.modules() if isinstance(m, nn.BatchNorm1d)][0]
    norm = [m for m in sampler.modules() if isinstance(m, nn.BatchNorm1d)][0]
    # measure independently: the mean of the batch norm's input over many z, with the EMA weights
    seen = []
    handle = norm_avg.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        averaged.eval()
        averaged(torch.rand(20000, cfg.model.z_dim) * 2 - 1)
    handle.remove()
    assert torch.allclose(norm.running_mean, seen[0].mean(0), atol=0.05)
    assert not torch.allclose(norm.running_mean, norm_avg.running_mean, atol=1e-3)  # it changed something
    loaded = gankit.load(tmp_path).sampler.generator  # `gankit sample` uses the same statistics
    loaded_norm = [m for m in loaded.modules() if isinstance(m, nn.BatchNorm1d)][0]
    assert torch.equal(loaded_norm.running_mean, norm.running_mean)


def test_penalties_refuse_a_batch_norm_discriminator(tiny_cfg):
    from gankit.data.images import ImageSource
    from gankit.errors import UserError
    from gankit.training.rejection import build_critic
    from gankit.models.base import has_batch_norm

    images = ImageSource(np.zeros((8, 1, 28, 28), np.uint8), None, "blank")
    image_cfg = config.with_overrides(tiny_cfg, ["model.name=dcgan", "model.conv_width=4", "model.z_dim=8",
                                                 "model.g_output=tanh", "model.d_batch_norm=true"])
    for penalty in ("loss.name=wgan-gp", "loss.r1_gamma=1"):
        with pytest.raises(UserError, match="batch norm in D"):
            Trainer(config.with_overrides(image_cfg, [penalty]), "unused", source=images)
    Trainer(config.with_overrides(image_cfg, ["loss.r1_gamma=1", "model.d_batch_norm=false"]), "unused", source=images)
    assert has_batch_norm(Trainer(image_cfg, "unused", source=images).d)
    assert not has_batch_norm(build_critic(image_cfg, (1, 28, 28), 0))  # the rejection critic judges one at a time


def test_probability_view_only_where_sigmoid_d_is_a_probability(tiny_cfg, tmp_path):
    ring = config.with_overrides(tiny_cfg, ["data.name=ring8", "train.steps=5"])
    assert Trainer(ring, "unused").eval_target().d_prob is not None
    hinge = Trainer(config.with_overrides(ring, ["loss.name=hinge"]), tmp_path / "hinge").fit(progress=False)
    assert hinge.eval_target().d_prob is None  # a critic's values are no probabilities
    row = metrics(tmp_path / "hinge")[-1]
    assert "critic_real" in row and "critic_fake" in row and "d_real" not in row
    smooth = Trainer(config.with_overrides(ring, ["loss.label_smoothing=0.2"]), "unused")
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    logits = smooth.d(smooth.norm.to_model(torch.as_tensor(x, dtype=torch.float32))).detach().double()
    # with real target 0.8, D's optimum is 0.8 D*: the view compares sigmoid(D) / 0.8 with D*
    assert np.allclose(smooth.eval_target().d_prob(x), torch.sigmoid(logits).numpy() / 0.8)


def test_image_snapshots_through_the_ema_sampler_leave_training_bit_identical(tiny_cfg, tmp_path):
    """Image snapshots sample the EMA G with its batch norm measured: on a copy, with its own noise."""
    from gankit.data.images import ImageSource

    images = ImageSource(np.random.default_rng(0).integers(0, 255, (64, 1, 28, 28), dtype=np.uint8), None, "noise")
    cfg = config.with_overrides(tiny_cfg, ["model.name=dcgan", "model.conv_width=4", "model.z_dim=8",
                                           "model.g_output=tanh", "train.ema_decay=0.9", "train.steps=6",
                                           "train.log_every=3", "train.checkpoint_every=3"])
    runs = [Trainer(config.with_overrides(cfg, [f"train.snapshot_every={every}"]), tmp_path / str(every),
                    source=images).fit(progress=False) for every in (0, 1)]
    assert len(list((tmp_path / "1" / "snapshots").glob("step-*.npz"))) == 6
    states = [run.state_dict() for run in runs]
    for part in ("g", "d", "ema"):
        for key, value in states[0][part].items():
            assert torch.equal(value, states[1][part][key]), (part, key)


def test_infogan_term_puts_each_category_of_the_latent_on_one_mode(tmp_path):
    """ring8's recipe, shortened: within 1,000 steps the code head tells the categories apart (its
    cross-entropy far below ln 8, a guess's) and each category's samples sit at one mode of the ring.
    A code head reading the wrong rows of a packed group, or a G loss without the term, fails this."""
    from gankit.presets import load_preset

    cfg = config.with_overrides(load_preset("ring8"), ["train.steps=1000", "eval.every=0", "train.snapshot_every=0",
                                                       "train.checkpoint_every=1000"])
    trainer = Trainer(cfg, tmp_path).fit(progress=False)
    logged = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["info"] < 0.1 * np.log(8)
    z = torch.cat([trainer.draw_noise() for _ in range(4)])
    with torch.no_grad():
        x = trainer.norm.to_data(trainer.sampler_g(z))
    mode = torch.cdist(x, trainer.source.centres.float()).argmin(1)
    category = z[:, cfg.model.z_dim:].argmax(1)
    at_main_mode = [torch.bincount(mode[category == k], minlength=8).max() / (category == k).sum() for k in range(8)]
    assert min(at_main_mode) > 0.9


def test_shared_schedule_gives_g_the_noise_that_made_its_batch(tiny_cfg):
    """With n_d > 1 each D update draws new noise; G's update reuses the last batch (shared), so its
    InfoGAN term must read the categories of the noise that made that batch."""
    cfg = config.with_overrides(tiny_cfg, ["train.schedule=shared", "train.n_d=2", "model.z_categories=3",
                                           "loss.info_weight=0.5", "train.precision=fp32"])
    trainer = Trainer(cfg, "unused")
    remade = []
    original = trainer.loss.g_loss

    def g_loss(g, d, z, step, generator=None, labels=None, fake=None):
        with torch.no_grad():  # G has not stepped yet: the batch's own noise remakes it exactly
            remade.append(torch.equal(g(z), fake.detach()))
        return original(g, d, z, step, generator, labels, fake=fake)

    trainer.loss.g_loss = g_loss
    trainer.train_step()
    assert remade == [True]


def test_translation_is_refused_for_vectors(tiny_cfg, tmp_path):
    from gankit.errors import UserError
    with pytest.raises(UserError, match="loss.translate shifts images"):
        Trainer(config.with_overrides(tiny_cfg, ["loss.translate=0.125"]), tmp_path / "run")
    assert not (tmp_path / "run").exists()
