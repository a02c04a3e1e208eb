"""Networks: MLP shapes, feature layer, packing, activations, initialisation, spectral norm; DCGAN
batch norm (plain and conditional) and dropout."""
import math

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from gankit.config import ModelConfig
from gankit.models import build_dcgan, build_mlp
from gankit.models.mlp import ACTIVATIONS, MLPDiscriminator, MLPGenerator
from tests.conftest import power_iterate, sigma


def test_shapes_and_feature_layer():
    g, d = build_mlp(ModelConfig(z_dim=3, d_feature_dim=2), shape=(5,))
    x = g(torch.randn(7, 3))
    assert x.shape == (7, 5)
    assert d(x).shape == (7,)
    assert d.features(x).shape == (7, 2)


def test_without_feature_layer_features_are_the_last_hidden_layer():
    d = MLPDiscriminator(2, hidden=(8, 6), feature_dim=0)
    assert d.features(torch.randn(4, 2)).shape == (4, 6)
    assert d(torch.randn(4, 2)).shape == (4,)


def test_packing_judges_each_group_of_pack_consecutive_samples():
    torch.manual_seed(0)
    d = MLPDiscriminator(2, hidden=(8,), pack=4)
    assert d.body[0].in_features == 4 * 2
    x = torch.randn(12, 2)
    base = d(x)
    assert base.shape == (3,)
    for i in range(12):  # moving sample i changes the logit of its own group and no other
        moved = x.clone()
        moved[i] += 1.0
        changed = ((d(moved) - base).abs() > 1e-6).tolist()
        assert changed == [g == i // 4 for g in range(3)], i


AT_MINUS_ONE = {"relu": 0.0, "tanh": -0.7615941559557649, "elu": math.exp(-1) - 1,
                "gelu": -0.15865525393145707, "silu": -1 / (1 + math.e), "sigmoid": 1 / (1 + math.e),
                "leaky_relu": -0.2}


@pytest.mark.parametrize("act", [*ACTIVATIONS, "leaky_relu"])
def test_every_hidden_activation_is_the_named_function(act):
    assert set(AT_MINUS_ONE) == {*ACTIVATIONS, "leaky_relu"}
    g = MLPGenerator(2, 2, (8, 8), act=act, leaky_slope=0.2)
    hidden = [m for m in g.net if not isinstance(m, nn.Linear)]
    assert len(hidden) == 2  # one after each hidden layer, none after the output layer
    for m in hidden:
        assert m(torch.tensor([-1.0])).item() == pytest.approx(AT_MINUS_ONE[act], rel=1e-6, abs=1e-7)


@pytest.mark.parametrize("output,low,high", [("tanh", -1, 1), ("sigmoid", 0, 1)])
def test_output_activation_bounds_samples(output, low, high):
    g = MLPGenerator(2, 3, (8,), output=output)
    with torch.no_grad():
        x = g(100 * torch.randn(50, 2))
    assert x.min() >= low and x.max() <= high


def test_normal_init_has_the_asked_std_and_zero_bias():
    g, _ = build_mlp(ModelConfig(g_hidden=(512, 512), init="normal", init_std=0.02), shape=(2,))
    big = g.net[2]
    assert big.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert big.bias.abs().max().item() == 0


def test_spectral_norm_bounds_each_layer():
    _, d = build_mlp(ModelConfig(spectral_norm=True, d_hidden=(32, 32)), shape=(2,))
    d.train()
    for _ in range(30):  # power iterations converge as D runs
        d(torch.randn(16, 2))
    d.eval()
    for layer in d.modules():
        if isinstance(layer, nn.Linear):
            assert torch.linalg.matrix_norm(layer.weight, ord=2).item() == pytest.approx(1.0, abs=0.05)


def test_mlp_generator_batch_norm_skips_the_noise_layer():
    from gankit.config import ModelConfig
    from gankit.models.mlp import build_mlp

    g, _ = build_mlp(ModelConfig(g_hidden=(8, 16, 32), g_batch_norm=True), (2,))
    norms = [m for m in g.modules() if isinstance(m, nn.BatchNorm1d)]
    assert [n.num_features for n in norms] == [16, 32]


def test_conditional_batch_norm_scales_and_shifts_per_class():
    from gankit.models.base import ConditionalBatchNorm

    torch.manual_seed(0)
    cbn = ConditionalBatchNorm(3, num_classes=2)
    with torch.no_grad():
        cbn.gain.weight[1] = 2.0
        cbn.shift.weight[1] = 5.0
    x = torch.randn(64, 3, 4, 4)
    normed = nn.BatchNorm2d(3, affine=False)(x)
    y = torch.tensor([0] * 32 + [1] * 32)
    out = cbn(x, y)
    torch.testing.assert_close(out[:32], normed[:32])
    torch.testing.assert_close(out[32:], 2 * normed[32:] + 5)


def test_conditional_dcgan_generator_uses_label_and_noise():
    from gankit.config import ModelConfig
    from gankit.models.dcgan import build_dcgan

    torch.manual_seed(0)
    g, _ = build_dcgan(ModelConfig(name="dcgan", z_dim=8, conv_width=4, conditional=True, g_output="tanh",
                                   init="normal"), (1, 28, 28), num_classes=3)
    with torch.no_grad():  # give each class its own scale and shift, as training would
        for m in g.modules():
            if hasattr(m, "gain") and m.gain is not None:
                m.gain.weight.normal_(1, 0.5)
                m.shift.weight.normal_(0, 0.5)
    g.train()
    with torch.no_grad():
        for _ in range(40):  # settle the running statistics
            g(torch.randn(64, 8), torch.arange(64) % 3)
    g.eval()
    z = torch.randn(4, 8)
    same_z = g(z[:1].repeat(3, 1), torch.arange(3))
    same_label = g(z, torch.zeros(4, dtype=torch.long))
    scale = same_label.std()
    assert (same_z[0] - same_z[1]).abs().mean() > 0.1 * scale  # the label matters
    assert (same_label[0] - same_label[1]).abs().mean() > 0.1 * scale  # and so does z within a class
    assert not any(isinstance(m, nn.Embedding) and m.embedding_dim == 50 for m in g.modules())  # no z-concat


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_dcgan28_discriminator_takes_dropout_from_the_config(dropout):
    from gankit.models.dcgan import build_dcgan

    _, d = build_dcgan(ModelConfig(name="dcgan", z_dim=8, conv_width=4, d_dropout=dropout), (1, 28, 28))
    rates = [m.p for m in d.modules() if isinstance(m, nn.Dropout)]
    assert rates == [dropout, dropout]
    x = torch.randn(6, 1, 28, 28)
    d.train()
    noisy = d(x) - d(x)  # dropout draws a new mask each pass; without it D is deterministic
    assert (noisy.abs().max() > 0) == (dropout > 0)


def test_dcgan28_discriminator_batch_norm_option_keeps_the_layout_of_the_plain_one():
    from gankit.models.dcgan import build_dcgan

    _, plain = build_dcgan(ModelConfig(name="dcgan", z_dim=8, conv_width=4), (1, 28, 28))
    _, normed = build_dcgan(ModelConfig(name="dcgan", z_dim=8, conv_width=4, d_batch_norm=True), (1, 28, 28))
    assert plain.joint_batch and not normed.joint_batch  # batch norm: real and fake get their own statistics
    assert [m for m in normed.modules() if isinstance(m, nn.BatchNorm2d)]
    conv_keys = {k for k in plain.state_dict() if "bias" not in k}
    assert conv_keys <= set(normed.state_dict())  # the same convolutions at the same places
    normed.train()
    assert normed(torch.randn(6, 1, 28, 28)).shape == (6,)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_spectral_norm_on_the_dcgan_discriminators(shape):
    torch.manual_seed(0)
    _, d = build_dcgan(ModelConfig(name="dcgan", z_dim=8, conv_width=4, spectral_norm=True), shape)
    layers = [m for m in d.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert not [m for m in d.modules() if isinstance(m, nn.BatchNorm2d)]  # SN replaces batch norm in D
    power_iterate(d, torch.randn(4, *shape))
    for m in layers:  # torch normalises the weight reshaped to (out, in * kh * kw)
        assert sigma(m) == pytest.approx(1.0, abs=0.02)


def test_dropout_drops_at_its_rate_and_keeps_the_mean():
    from gankit.models.base import Dropout

    drop = Dropout(0.3)
    x = torch.ones(200_000)
    torch.manual_seed(0)
    y = drop(x)
    assert (y == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)  # kept values scaled by 1 / 0.7
    assert torch.unique(y).tolist() == pytest.approx([0.0, 1 / 0.7])
    torch.manual_seed(0)
    assert torch.equal(drop(x), y)  # the global random stream: reproducible, resumable
    assert torch.equal(drop.eval()(x), x)
    z = torch.randn(1000, requires_grad=True)
    out = Dropout(0.5)(z)
    out.sum().backward()
    assert torch.equal(z.grad, (out != 0).float() * 2.0)  # the gradient passes where the value does


def test_the_dropout_mask_is_laid_out_as_its_batch():
    """A channels-last batch gets a channels-last mask (one layout in the multiply), drawn from the
    same numbers: the i-th number of the draw masks the i-th element in memory."""
    from gankit.models.base import Dropout, in_memory_order

    x = torch.ones(8, 6, 5, 4).contiguous(memory_format=torch.channels_last)
    numbers = torch.arange(x.numel())
    laid = in_memory_order(numbers, x)
    assert laid.stride() == x.stride()
    assert torch.equal(laid, numbers.view(8, 5, 4, 6).permute(0, 3, 1, 2))  # N, H, W, C in memory
    assert torch.equal(in_memory_order(numbers[:7 * 120], x[1:]), numbers[:7 * 120].view(7, 5, 4, 6).permute(0, 3, 1, 2))
    assert torch.equal(in_memory_order(numbers, x.contiguous()), numbers.view(8, 6, 5, 4))
    one_channel = torch.ones(8, 1, 5, 4).contiguous(memory_format=torch.channels_last)  # both layouts at once
    assert torch.equal(in_memory_order(numbers[:160], one_channel), numbers[:160].view(8, 1, 5, 4))
    sliced = torch.ones(8, 12, 5, 4)[:, ::2]  # neither layout: row-major order
    assert torch.equal(in_memory_order(numbers, sliced), numbers.view(8, 6, 5, 4))
    with pytest.raises(RuntimeError):
        in_memory_order(numbers[:100], x)  # too few numbers for the batch
    big = torch.ones(64, 16, 14, 14).contiguous(memory_format=torch.channels_last)
    torch.manual_seed(0)
    y = Dropout(0.3)(big)
    assert (y == 0).float().mean().item() == pytest.approx(0.3, abs=0.005)
    torch.manual_seed(0)
    flat = Dropout(0.3)(torch.ones(big.numel()))  # the same draw on a batch whose memory order is its own
    assert torch.equal(y, flat.view(64, 14, 14, 16).permute(0, 3, 1, 2))


def test_dropout_at_a_rate_16_bits_cannot_tell_from_1_drops_everything():
    from gankit.models.base import Dropout

    torch.manual_seed(0)
    assert torch.equal(Dropout(1 - 1e-6)(torch.ones(1000)), torch.zeros(1000))


def test_a_categorical_latent_is_a_uniform_one_hot_after_the_continuous_coordinates():
    from gankit.models.noise import latent_width, sample_noise

    m = ModelConfig(z_dim=3, noise="uniform", z_categories=5)
    z = sample_noise(20_000, m, torch.Generator().manual_seed(0))
    assert z.shape == (20_000, latent_width(m)) == (20_000, 8)
    assert (z[:, :3].abs() <= 1).all() and z[:, :3].std() > 0.5  # the continuous part as before
    code = z[:, 3:]
    assert set(code.unique().tolist()) == {0.0, 1.0} and (code.sum(1) == 1).all()
    shares = code.mean(0)
    assert (shares - 0.2).abs().max() < 0.02  # uniform over the 5 categories
    # without categories the stream is exactly the old one (runs of earlier versions reproduce)
    plain = sample_noise(10, ModelConfig(z_dim=3, noise="uniform"), torch.Generator().manual_seed(1))
    torch.testing.assert_close(plain, torch.rand(10, 3, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    g, _ = build_mlp(m, (2,))
    assert g(z[:4]).shape == (4, 2)


@pytest.mark.parametrize("noise", ["uniform", "normal"])
def test_z_std_spreads_the_continuous_noise_and_leaves_the_category_one_hot(noise):
    from gankit.models.noise import sample_noise

    wide = sample_noise(1000, ModelConfig(z_dim=3, noise=noise, z_categories=4), torch.Generator().manual_seed(2))
    narrow = sample_noise(1000, ModelConfig(z_dim=3, noise=noise, z_categories=4, z_std=0.1),
                          torch.Generator().manual_seed(2))
    torch.testing.assert_close(narrow[:, :3], wide[:, :3] * 0.1)
    assert torch.equal(narrow[:, 3:], wide[:, 3:])  # the same categories, still one-hot


@pytest.mark.parametrize("size", [28, 32])
def test_the_categorical_code_can_pick_the_scale_and_shift_of_g_batch_norms(size):
    from gankit.models.base import ConditionalBatchNorm
    from gankit.models.noise import sample_noise

    m = ModelConfig(name="dcgan", z_dim=8, noise="normal", conv_width=4, g_output="tanh", z_categories=3,
                    code_batch_norm=True)
    g, _ = build_dcgan(m, (1, size, size))
    norms = [layer for layer in g.modules() if isinstance(layer, ConditionalBatchNorm)]
    assert norms and all(norm.gain.num_embeddings == 3 for norm in norms) and g.num_classes == 0
    z = sample_noise(64, m, torch.Generator().manual_seed(0))
    category = z[:, 8:].argmax(1)
    with torch.no_grad():
        norms[-1].gain.weight[1] = 0.0  # category 1: G's last normalised features are the same for all z
    x = g(z)
    assert x[category == 1].std(0).max() < 1e-6 < x[category == 0].std(0).max()
    x[category != 1].sum().backward()  # a category's scale learns only from its own samples
    assert norms[-1].gain.weight.grad[1].abs().max() == 0 < norms[-1].gain.weight.grad[0].abs().max()


@pytest.mark.parametrize("size", [28, 32])
def test_the_categorical_code_can_pick_only_the_shift_of_g_batch_norms(size):
    from gankit.models.base import ConditionalBatchNorm
    from gankit.models.noise import sample_noise

    m = ModelConfig(name="dcgan", z_dim=8, noise="normal", conv_width=4, g_output="tanh", z_categories=3,
                    code_batch_norm=True, code_batch_norm_scale=False)
    g, _ = build_dcgan(m, (1, size, size))
    norms = [layer for layer in g.modules() if isinstance(layer, ConditionalBatchNorm)]
    assert norms and all(norm.gain is None and norm.shift.num_embeddings == 3 for norm in norms)
    assert not any(norm.norm.affine for norm in norms)  # no scale learnt at all, shared or per category
    z = sample_noise(64, m, torch.Generator().manual_seed(0))
    category = z[:, 8:].argmax(1)
    x = g(z)
    x[category != 2].sum().backward()  # a category's shift learns only from its own samples
    grad = norms[-1].shift.weight.grad
    assert grad[2].abs().max() == 0 < grad[0].abs().max()


def test_dcgan_discriminator_takes_its_own_width():
    base = ModelConfig(name="dcgan", z_dim=8, conv_width=4, g_output="tanh")
    g, d = build_dcgan(base, (1, 28, 28))
    g2, wide = build_dcgan(ModelConfig(name="dcgan", z_dim=8, conv_width=4, d_conv_width=16, g_output="tanh"),
                           (1, 28, 28))
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(g2) == count(g) and count(wide) > 4 * count(d)
    assert wide(torch.zeros(3, 1, 28, 28)).shape == (3,)


def test_flatten_keeps_nchw_order_and_hands_the_gradient_back_channels_last():
    """Flattening a channels-last activation must give the same vector as nn.Flatten, and its
    gradient must come back channels-last: mixed layouts make the elementwise backward kernels below
    (leaky_relu_backward) many times slower."""
    from gankit.models.base import Flatten

    x = torch.randn(3, 4, 5, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    weights = torch.randn(3, 100)
    (Flatten()(x) * weights).sum().backward()
    assert torch.equal(Flatten()(x), nn.Flatten()(x))
    assert x.grad.is_contiguous(memory_format=torch.channels_last) and not x.grad.is_contiguous()
    assert torch.equal(x.grad, weights.view(3, 4, 5, 5))
    plain = torch.randn(3, 4, 5, 5, requires_grad=True)
    (Flatten()(plain) * weights).sum().backward()
    assert plain.grad.is_contiguous()


def test_dcgan28_backward_sees_one_memory_format_per_op():
    """With channels-last weights (as the trainer makes them) no op in G's or D's forward or
    backward mixes channels-last and NCHW tensors."""
    from torch.utils._python_dispatch import TorchDispatchMode

    g, d = build_dcgan(ModelConfig(name="dcgan", conv_width=4, z_dim=8, d_batch_norm=True), (1, 28, 28))
    g, d = (net.to(memory_format=torch.channels_last) for net in (g, d))

    def layout(t):
        return "nchw" if t.is_contiguous() else "nhwc" if t.is_contiguous(memory_format=torch.channels_last) else "?"

    class MixedLayouts(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.mixed = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            images = [a for a in args if isinstance(a, torch.Tensor) and a.dim() == 4 and a.shape[1] > 1
                      and a.shape[2] > 1]
            if len({layout(a) for a in images}) > 1:
                self.mixed.append(str(func))
            return func(*args, **(kwargs or {}))

    with MixedLayouts() as mode:
        d(g(torch.randn(6, 8))).sum().backward()
    assert mode.mixed == []


@pytest.mark.parametrize("hidden", [0, 6])
def test_code_head_gives_each_packed_sample_its_category_logits(hidden):
    d = build_dcgan(ModelConfig(name="dcgan", conv_width=4, z_dim=8, pack=2), (1, 28, 28))[1]
    d.add_code_head(5, hidden)
    logits, code = d(torch.randn(6, 1, 28, 28), with_code=True)
    assert logits.shape == (3,) and code.shape == (6, 5)
    layers = [m for m in d.code.modules() if isinstance(m, nn.Linear)]
    assert [layer.out_features for layer in layers] == ([6, 10] if hidden else [10])


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("narrow,wide", [(1, 16), (3, 8)])
def test_phase_layers_compute_the_stock_convolutions(narrow, wide, channels_last):
    """D's first and G's last 28x28 DCGAN layers, rewritten over the image's 2x2 phases, give the
    outputs and the input and weight gradients of nn.Conv2d / nn.ConvTranspose2d with the same
    parameters (a stock state dict loads into them), to float rounding."""
    from gankit.models.phase_conv import PhaseConv2d, PhaseConvTranspose2d

    torch.manual_seed(0)
    pairs = [(nn.Conv2d(narrow, wide, 5, 2, 2), PhaseConv2d(narrow, wide, 5, 2, 2), (4, narrow, 28, 28)),
             (nn.ConvTranspose2d(wide, narrow, 5, 2, 2, output_padding=1),
              PhaseConvTranspose2d(wide, narrow, 5, 2, 2, output_padding=1), (4, wide, 14, 14))]
    for stock, phased, shape in pairs:
        phased.load_state_dict(stock.state_dict())
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        stock, phased = stock.to(memory_format=memory_format), phased.to(memory_format=memory_format)
        x = torch.randn(shape).contiguous(memory_format=memory_format)
        upstream = None
        outputs, grads = [], []
        for layer in (stock, phased):
            x_in = x.clone().requires_grad_()
            y = layer(x_in)
            upstream = torch.randn(y.shape) if upstream is None else upstream
            (y * upstream).sum().backward()
            outputs.append(y)
            grads.append((x_in.grad, layer.weight.grad, layer.bias.grad))
        assert outputs[1].shape == outputs[0].shape
        torch.testing.assert_close(outputs[1], outputs[0], rtol=1e-5, atol=1e-5)
        for phased_grad, stock_grad in zip(grads[1], grads[0]):  # sums of thousands of terms of size ~1
            torch.testing.assert_close(phased_grad, stock_grad, rtol=1e-4, atol=1e-3)


def test_phase_layers_compute_the_stock_convolutions_on_bfloat16_weights():
    """On train.precision = bf16's weight buffers (bfloat16 weights under autocast) the phase layers
    run too, and give the stock layers' bfloat16 outputs and gradients to bfloat16's rounding."""
    from gankit.models.phase_conv import PhaseConv2d, PhaseConvTranspose2d, _phases_apply

    torch.manual_seed(0)
    pairs = [(nn.Conv2d(1, 16, 5, 2, 2), PhaseConv2d(1, 16, 5, 2, 2), (8, 1, 28, 28)),
             (nn.ConvTranspose2d(16, 1, 5, 2, 2, output_padding=1),
              PhaseConvTranspose2d(16, 1, 5, 2, 2, output_padding=1), (8, 16, 14, 14))]
    for stock, phased, shape in pairs:
        phased.load_state_dict(stock.state_dict())
        stock, phased = stock.to(torch.bfloat16), phased.to(torch.bfloat16)
        x, upstream = torch.randn(shape), None
        results = []
        for layer in (stock, phased):
            x_in = x.clone().requires_grad_()
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert _phases_apply(layer, x_in)
                y = layer(x_in)
            upstream = torch.randn(y.shape) if upstream is None else upstream
            (y.float() * upstream).sum().backward()
            results.append([t.float() for t in (y, x_in.grad, layer.weight.grad, layer.bias.grad)])
        for phased_t, stock_t in zip(results[1], results[0]):  # bfloat16: 8 bits of mantissa
            torch.testing.assert_close(phased_t, stock_t, rtol=2e-2, atol=2e-2 * stock_t.abs().max().item())
    with torch.autocast("cpu", dtype=torch.bfloat16):  # float32 weights under autocast: stock kernels
        assert not _phases_apply(PhaseConv2d(1, 16, 5, 2, 2), torch.randn(2, 1, 28, 28))


def test_phase_layers_leave_other_shapes_and_devices_to_pytorch():
    """Off the CPU (here the meta device) and for other strides or sizes the phase layers are plain
    nn.Conv2d / nn.ConvTranspose2d."""
    from gankit.models.phase_conv import PhaseConv2d, PhaseConvTranspose2d

    on_meta = PhaseConvTranspose2d(8, 1, 5, 2, 2, output_padding=1, device="meta")
    assert on_meta(torch.empty(2, 8, 14, 14, device="meta")).shape == (2, 1, 28, 28)
    for phased, stock in [(PhaseConv2d(1, 4, 5, 1, 2), nn.Conv2d(1, 4, 5, 1, 2)),
                          (PhaseConv2d(1, 4, 3, 2, 1), nn.Conv2d(1, 4, 3, 2, 1))]:
        stock.load_state_dict(phased.state_dict())
        x = torch.randn(2, 1, 27, 27)
        assert torch.equal(phased(x), stock(x))
    odd = torch.randn(2, 1, 27, 27)
    layer = PhaseConv2d(1, 4, 5, 2, 2)
    assert torch.equal(layer(odd), nn.Conv2d.forward(layer, odd))
