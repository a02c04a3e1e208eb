"""MLP networks: shapes, feature layer, packing, activations, initialisation, spectral norm."""
import pytest
import torch
from torch import nn

from gankit.config import ModelConfig
from gankit.models import build_mlp
from gankit.models.mlp import ACTIVATIONS, MLPDiscriminator, MLPGenerator


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


def test_packing_judges_groups_of_samples():
    d = MLPDiscriminator(2, hidden=(8,), pack=4)
    assert d(torch.randn(32, 2)).shape == (8,)
    assert d.body[0].in_features == 8


@pytest.mark.parametrize("act", [*ACTIVATIONS, "leaky_relu"])
def test_every_hidden_activation_builds(act):
    g = MLPGenerator(2, 2, (8,), act=act)
    assert torch.isfinite(g(torch.randn(4, 2))).all()


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
