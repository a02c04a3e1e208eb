"""Multi-layer perceptron generator and discriminator: pure architecture, no training logic.

The discriminator returns logits. Its optional linear feature layer (2 units in the source
article) sits before the logit so the plots can show how D sees real and generated points.
"""
from __future__ import annotations

import torch
from torch import nn

from gankit.config import ModelConfig

ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
}
OUTPUTS = {"none": nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def activation(name: str, leaky_slope: float) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(leaky_slope)
    return ACTIVATIONS[name]()


def mlp(widths: list[int], act: str, leaky_slope: float) -> nn.Sequential:
    """Linear layers of the given widths with `act` after each (none after the last)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2:
            layers.append(activation(act, leaky_slope))
    return nn.Sequential(*layers)


class MLPGenerator(nn.Module):
    """z (batch, z_dim) -> sample (batch, out_dim)."""

    def __init__(self, z_dim: int, out_dim: int, hidden: tuple[int, ...], act: str = "leaky_relu",
                 output: str = "none", leaky_slope: float = 0.2):
        super().__init__()
        self.z_dim, self.out_dim = z_dim, out_dim
        self.net = mlp([z_dim, *hidden, out_dim], act, leaky_slope)
        self.out = OUTPUTS[output]()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(z))


class MLPDiscriminator(nn.Module):
    """x (batch, pack * in_dim) -> logit (batch,). `features(x)` gives the feature layer's output."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], act: str = "leaky_relu", feature_dim: int = 2,
                 leaky_slope: float = 0.2, pack: int = 1):
        super().__init__()
        self.in_dim, self.pack = in_dim, pack
        body = [in_dim * pack, *hidden]
        self.body = nn.Sequential(mlp(body, act, leaky_slope), activation(act, leaky_slope)) if hidden \
            else nn.Identity()
        last = body[-1]
        # The article's feature layer is linear: a 2-D picture of D's last hidden representation.
        self.feature = nn.Linear(last, feature_dim) if feature_dim else nn.Identity()
        self.logit = nn.Linear(feature_dim or last, 1)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, dim) -> (batch / pack, pack * dim): PacGAN judges groups of samples jointly."""
        return x.reshape(x.shape[0] // self.pack, self.pack * x.shape[1])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(self.body(self.packed(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(x)).squeeze(1)


def init_weights(module: nn.Module, scheme: str, std: float = 0.02) -> None:
    """'default' keeps PyTorch's; 'xavier_uniform' matches TensorFlow dense layers; 'normal' is N(0, std)."""
    if scheme == "default":
        return
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            if scheme == "xavier_uniform":
                nn.init.xavier_uniform_(layer.weight)
            else:
                nn.init.normal_(layer.weight, 0.0, std)
            nn.init.zeros_(layer.bias)


def with_spectral_norm(module: nn.Module) -> nn.Module:
    for layer in list(module.modules()):
        if isinstance(layer, nn.Linear):
            nn.utils.parametrizations.spectral_norm(layer)
    return module


def build_mlp(cfg: ModelConfig, data_dim: int) -> tuple[MLPGenerator, MLPDiscriminator]:
    g = MLPGenerator(cfg.z_dim, data_dim, cfg.g_hidden, cfg.g_activation, cfg.g_output, cfg.leaky_slope)
    d = MLPDiscriminator(data_dim, cfg.d_hidden, cfg.d_activation, cfg.d_feature_dim, cfg.leaky_slope, cfg.pack)
    init_weights(g, cfg.init, cfg.init_std)
    init_weights(d, cfg.init, cfg.init_std)
    if cfg.spectral_norm:
        with_spectral_norm(d)
    return g, d
