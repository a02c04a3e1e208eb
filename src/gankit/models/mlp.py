"""Multi-layer perceptron generator and discriminator: pure architecture, no training logic.

The discriminator returns logits. Its optional linear feature layer (2 units in the source
article) sits before the logit so the plots can show how D sees real and generated points.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gankit.config import ModelConfig
from gankit.models.base import Discriminator, Dropout, Generator
from gankit.models.noise import latent_width

ACTIVATIONS = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
}
OUTPUTS = {"none": nn.Identity, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def activation(name: str, leaky_slope: float) -> nn.Module:
    if name == "leaky_relu":
        return nn.LeakyReLU(leaky_slope)
    return ACTIVATIONS[name]()


def mlp(widths: list[int], act: str, leaky_slope: float, dropout: float = 0.0,
        last_act: bool = False, batch_norm: bool = False) -> nn.Sequential:
    """Linear layers of the given widths with `act` (and dropout) after each but the last, or after
    every one with last_act. batch_norm: before the activation of every hidden layer but the first
    (the first sees raw noise, whose statistics are already fixed)."""
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(widths) - 2 or last_act:
            if batch_norm and i > 0:
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(activation(act, leaky_slope))
            if dropout > 0:
                layers.append(Dropout(dropout))
    return nn.Sequential(*layers)


class MLPGenerator(Generator):
    """z (batch, z_dim) -> sample of `out_shape` (a vector, or an image (C, H, W))."""

    def __init__(self, z_dim: int, out_shape: tuple[int, ...] | int, hidden: tuple[int, ...],
                 act: str = "leaky_relu", output: str = "none", leaky_slope: float = 0.2, num_classes: int = 0,
                 batch_norm: bool = False):
        super().__init__(z_dim, num_classes, embed_dim=min(50, 4 * num_classes))
        self.out_shape = (out_shape,) if isinstance(out_shape, int) else tuple(out_shape)
        self.out_dim = math.prod(self.out_shape)
        self.net = mlp([self.in_dim, *hidden, self.out_dim], act, leaky_slope, batch_norm=batch_norm)
        self.out = OUTPUTS[output]()

    def decode(self, inputs: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.net(inputs)).reshape(-1, *self.out_shape)


class MLPDiscriminator(Discriminator):
    """x (batch, *shape) -> logit (batch / pack,). `features(x)` gives the feature layer's output."""

    def __init__(self, in_shape: tuple[int, ...] | int, hidden: tuple[int, ...], act: str = "leaky_relu",
                 feature_dim: int = 2, leaky_slope: float = 0.2, pack: int = 1, num_classes: int = 0,
                 dropout: float = 0.0):
        super().__init__()
        self.in_dim = in_shape if isinstance(in_shape, int) else math.prod(in_shape)
        self.pack = pack
        body = [self.in_dim * pack, *hidden]
        self.body = mlp(body, act, leaky_slope, dropout, last_act=True) if hidden else nn.Identity()
        # The article's feature layer is linear: a 2-D picture of D's last hidden representation.
        self.feature = nn.Linear(body[-1], feature_dim) if feature_dim else nn.Identity()
        self.init_head(feature_dim or body[-1], num_classes)

    def packed(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, ...) -> (batch / pack, pack * dim): PacGAN judges groups of samples jointly."""
        return x.reshape(x.shape[0] // self.pack, -1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(self.body(self.packed(x)))


WEIGHTED = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def init_weights(module: nn.Module, scheme: str, std: float = 0.02) -> None:
    """'default' keeps PyTorch's; 'xavier_uniform' matches TensorFlow's layers; 'normal' is N(0, std)
    for weights and N(1, std) for batch-norm scales (Radford et al. 2015). Embeddings keep their own."""
    if scheme == "default":
        return
    for layer in module.modules():
        if isinstance(layer, WEIGHTED):
            if scheme == "xavier_uniform":
                nn.init.xavier_uniform_(layer.weight)
            else:
                nn.init.normal_(layer.weight, 0.0, std)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, NORMS) and layer.affine and scheme == "normal":
            nn.init.normal_(layer.weight, 1.0, std)
            nn.init.zeros_(layer.bias)


def with_spectral_norm(module: nn.Module) -> nn.Module:
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.utils.parametrizations.spectral_norm(layer)
    return module


def build_mlp(cfg: ModelConfig, shape: tuple[int, ...], num_classes: int = 0) -> tuple[MLPGenerator, MLPDiscriminator]:
    classes = num_classes if cfg.conditional else 0
    g = MLPGenerator(latent_width(cfg), shape, cfg.g_hidden, cfg.g_activation, cfg.g_output, cfg.leaky_slope, classes,
                     cfg.g_batch_norm)
    d = MLPDiscriminator(shape, cfg.d_hidden, cfg.d_activation, cfg.d_feature_dim, cfg.leaky_slope, cfg.pack,
                         classes, cfg.d_dropout)
    init_weights(g, cfg.init, cfg.init_std)
    init_weights(d, cfg.init, cfg.init_std)
    if cfg.spectral_norm:
        with_spectral_norm(d)
    return g, d
