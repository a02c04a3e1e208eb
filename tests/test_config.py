"""Config: defaults, TOML round trip, --set overrides and the messages for bad values."""
import pytest

from gankit import config
from gankit.errors import ConfigError
from gankit.presets import load_preset, preset_names


def test_defaults_round_trip_through_toml():
    cfg = config.RunConfig()
    assert config.loads(config.dumps(cfg)) == cfg


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_round_trips(name):
    cfg = load_preset(name)
    assert cfg.preset == name
    assert config.loads(config.dumps(cfg)) == cfg


def test_seed_preset_holds_the_articles_hyperparameters():
    cfg = load_preset("seed-quadratic")
    assert (cfg.model.g_hidden, cfg.model.d_hidden, cfg.model.d_feature_dim) == ((16, 16), (16, 16), 2)
    assert cfg.model.leaky_slope == 0.2 and cfg.model.noise == "uniform" and cfg.model.z_dim == 2
    assert cfg.optim_g.name == cfg.optim_d.name == "rmsprop" and cfg.optim_g.lr == cfg.optim_d.lr == 0.001
    assert (cfg.train.batch_size, cfg.train.n_d, cfg.train.n_g, cfg.train.steps) == (256, 10, 10, 10001)
    assert cfg.train.reuse_batch and not cfg.data.normalize and cfg.train.log_every == 10
    assert cfg.train.ema_decay == 0.99  # gankit's sampler only: training is untouched (test_trainer.py)


def test_overrides_parse_toml_values_and_bare_words():
    cfg = config.with_overrides(config.RunConfig(), [
        "train.steps=123", "model.g_hidden=[8, 4]", "loss.name=hinge", "data.name=points:/x/y.npy",
        "train.reuse_batch=true", "optim_d.lr=1e-3"])
    assert cfg.train.steps == 123 and cfg.model.g_hidden == (8, 4) and cfg.loss.name == "hinge"
    assert cfg.data.name == "points:/x/y.npy" and cfg.train.reuse_batch and cfg.optim_d.lr == 1e-3


def test_an_int_is_accepted_where_a_float_is_expected():
    assert config.with_overrides(config.RunConfig(), ["optim_g.lr=1"]).optim_g.lr == 1.0


@pytest.mark.parametrize("item,message", [
    ("train.stepz=5", "did you mean 'steps'"),
    ("trian.steps=5", "did you mean 'train'"),
    ("train.steps=five", "expected an integer"),
    ("train.steps=0", "must be >= 1"),
    ("train.reuse_batch=1", "true or false"),
    ("model.noise=gauss", "one of 'uniform', 'normal'"),
    ("model.z_std=0", "model.z_std.*must be > 0"),
    ("loss.info_warp=1", "loss.info_warp.*set loss.info_weight > 0"),
    ("loss.info_warp=-1", r"loss.info_warp.*must be in \[0, 2\]"),
    ("loss.info_warp=3", r"loss.info_warp.*must be in \[0, 2\]"),
    ("loss.info_every=0", "loss.info_every.*must be >= 1"),
    ("loss.info_warp_share=0", r"loss.info_warp_share.*must be in \(0, 1\]"),
    ("loss.info_real=-1", r"loss.info_real.*must be >= 0"),
    ("loss.info_real=1", "loss.info_real.*set loss.info_warp > 0"),
    ("loss.info_real_every=-1", "loss.info_real_every.*must be >= 0"),
    ("loss.info_real_every=1", "loss.info_real_every.*set loss.info_real > 0"),
    ("loss.info_real_first=-1", "loss.info_real_first.*must be >= 0"),
    ("loss.info_real_first=5", "loss.info_real_first.*set loss.info_real > 0"),
    ("model.g_hidden=[8, -1]", "every width must be >= 1"),
    ("train.ema_decay=1.5", r"\[0, 1\)"),
    ("optim_g.lr=-1", "must be > 0"),
    ("steps=5", "must be section.key"),
    ("train.steps", "not key=value"),
    ("model.code_batch_norm=true", "needs model.name = 'dcgan', model.z_categories > 0"),
    ("model.code_batch_norm_scale=false", "only applies with model.code_batch_norm = true"),
    ("loss.top_k=0", r"must be in \(0, 1\]"),
    ("loss.top_k_anneal=-5", "must be >= 0"),
    ("loss.mode_seeking_anneal=-1", "loss.mode_seeking_anneal.*must be >= 0"),
])
def test_bad_overrides_name_the_key_and_the_fix(item, message):
    with pytest.raises(ConfigError, match=message):
        config.with_overrides(config.RunConfig(), [item])


def test_batch_must_split_into_packs():
    packed = config.with_overrides(config.RunConfig(), ["model.pack=4", "train.batch_size=32"])
    with pytest.raises(ConfigError, match="multiple of model.pack = 4"):
        config.with_overrides(packed, ["train.batch_size=30"])


def test_label_smoothing_is_refused_for_losses_without_labels():
    with pytest.raises(ConfigError, match="applies to the ns, minimax and lsgan"):
        config.with_overrides(config.RunConfig(), ["loss.name=hinge", "loss.label_smoothing=0.1"])


def test_malformed_toml_is_one_clear_error(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[train\nsteps = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load(path)
    with pytest.raises(ConfigError, match="does not exist"):
        config.load(tmp_path / "missing.toml")


def test_a_section_must_be_a_table():
    with pytest.raises(ConfigError, match="must be a table"):
        config.loads("train = 3")


def test_the_step_benchmark_settings_are_valid_configs_of_their_presets():
    """benchmarks/step_speed.py changes presets by overrides; a preset's new key must not break them."""
    import importlib.util
    from pathlib import Path

    from gankit.presets import load_preset

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "step_speed.py"
    spec = importlib.util.spec_from_file_location("step_speed", path)
    step_speed = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(step_speed)
    for preset, overrides in step_speed.NETS.values():
        for variant in [[], *step_speed.VARIANTS.values()]:
            config.with_overrides(load_preset(preset), [*overrides, *variant])  # raises ConfigError if not
