"""DCGAN generators and discriminators (Radford et al. 2015), with class-conditional variants.

- 28x28 (MNIST-sized): the TensorFlow DCGAN tutorial's networks. G: dense -> 7x7x(4w) -> transposed
  convolutions 5x5 (stride 1, 2, 2) with batch norm and LeakyReLU -> tanh. D: two 5x5 stride-2
  convolutions with LeakyReLU and dropout (`model.d_dropout`; the tutorial's 0.3) or batch norm on the
  second (`model.d_batch_norm`, Radford et al.) -> dense -> one logit. The layers on the image side
  run on CPUs as 3x3 convolutions over the image's 2x2 phases (phase_conv.py: same parameters and
  arithmetic; mnist-dcgan's step 1.28x faster on a 2-core Xeon).
- 32x32 and 64x64: the paper's networks. G: transposed 4x4 convolutions from 4x4 up, batch norm,
  ReLU, tanh. D: 4x4 stride-2 convolutions, batch norm (not on the first layer), LeakyReLU 0.2,
  down to 4x4 -> one logit.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from gankit.config import ModelConfig
from gankit.errors import UserError
from gankit.models.base import ConditionedSequential, Discriminator, Dropout, Flatten, Generator, like_weight
from gankit.models.noise import latent_width
from gankit.models.mlp import OUTPUTS, init_weights, with_spectral_norm
from gankit.models.phase_conv import PhaseConv2d, PhaseConvTranspose2d


class DCGAN28Generator(Generator):
    def __init__(self, z_dim: int, channels: int, width: int = 64, output: str = "tanh", num_classes: int = 0,
                 code_categories: int = 0, code_scale: bool = True):
        super().__init__(z_dim, num_classes, code_categories=code_categories, code_scale=code_scale)
        w, norm = width, self.batch_norm
        self.dense = ConditionedSequential(nn.Linear(self.in_dim, 7 * 7 * 4 * w, bias=False),
                                           norm(7 * 7 * 4 * w, image=False), nn.LeakyReLU(0.3))
        self.width = w
        self.convs = ConditionedSequential(
            nn.ConvTranspose2d(4 * w, 2 * w, 5, 1, 2, bias=False), norm(2 * w), nn.LeakyReLU(0.3),
            nn.ConvTranspose2d(2 * w, w, 5, 2, 2, output_padding=1, bias=False), norm(w),
            nn.LeakyReLU(0.3),
            PhaseConvTranspose2d(w, channels, 5, 2, 2, output_padding=1), OUTPUTS[output]())

    def decode(self, inputs: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        grid = self.dense(inputs, y).view(-1, 4 * self.width, 7, 7)
        return self.convs(like_weight(grid, self.convs[0]), y)


class DCGAN28Discriminator(Discriminator):
    def __init__(self, channels: int, width: int = 64, pack: int = 1, num_classes: int = 0, dropout: float = 0.0,
                 batch_norm: bool = False):
        super().__init__()
        self.pack = pack
        # Batch norm (Radford et al.: every D layer but the first) makes D learn several times faster,
        # so it keeps up with G; real and generated batches then need their own statistics.
        norm = nn.BatchNorm2d(2 * width) if batch_norm else nn.Identity()
        self.joint_batch = not batch_norm
        self.convs = nn.Sequential(
            PhaseConv2d(channels * pack, width, 5, 2, 2), nn.LeakyReLU(0.3), Dropout(dropout),
            nn.Conv2d(width, 2 * width, 5, 2, 2, bias=not batch_norm), norm, nn.LeakyReLU(0.3), Dropout(dropout),
            Flatten())
        self.init_head(2 * width * 7 * 7, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(pack_channels(x, self.pack))


class DCGANGenerator(Generator):
    def __init__(self, z_dim: int, channels: int, size: int, width: int = 64, output: str = "tanh",
                 num_classes: int = 0, code_categories: int = 0, code_scale: bool = True):
        super().__init__(z_dim, num_classes, code_categories=code_categories, code_scale=code_scale)
        ups = int(math.log2(size)) - 2  # 4x4 doubled `ups` times
        widths = [width * 2 ** (ups - 1 - i) for i in range(ups)]
        layers: list[nn.Module] = [nn.ConvTranspose2d(self.in_dim, widths[0], 4, 1, 0, bias=False),
                                   self.batch_norm(widths[0]), nn.ReLU(True)]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), self.batch_norm(w_out), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), OUTPUTS[output]()]
        self.net = ConditionedSequential(*layers)

    def decode(self, inputs: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.net(inputs[:, :, None, None], y)


class DCGANDiscriminator(Discriminator):
    joint_batch = False  # batch norm: real and generated batches get their own statistics

    def __init__(self, channels: int, size: int, width: int = 64, pack: int = 1, num_classes: int = 0,
                 batch_norm: bool = True):
        super().__init__()
        self.pack = pack
        downs = int(math.log2(size)) - 2
        widths = [width * 2**i for i in range(downs)]
        layers: list[nn.Module] = [nn.Conv2d(channels * pack, widths[0], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        for w_in, w_out in zip(widths[:-1], widths[1:]):
            norm = nn.BatchNorm2d(w_out) if batch_norm else nn.Identity()
            layers += [nn.Conv2d(w_in, w_out, 4, 2, 1, bias=not batch_norm), norm, nn.LeakyReLU(0.2, True)]
        self.convs = nn.Sequential(*layers, Flatten())
        self.joint_batch = not batch_norm
        self.init_head(widths[-1] * 4 * 4, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(pack_channels(x, self.pack))


def pack_channels(x: torch.Tensor, pack: int) -> torch.Tensor:
    """PacGAN for images: `pack` images side by side in the channel dimension."""
    return x if pack == 1 else x.reshape(x.shape[0] // pack, pack * x.shape[1], *x.shape[2:])


def build_dcgan(cfg: ModelConfig, shape: tuple[int, ...], num_classes: int = 0) -> tuple[Generator, Discriminator]:
    if len(shape) != 3:
        raise UserError("model.name = 'dcgan' needs image data; use model.name = 'mlp' for vectors")
    channels, height, width = shape
    classes = num_classes if cfg.conditional else 0
    if height != width or height not in (28, 32, 64):
        raise UserError(f"dcgan makes 28x28, 32x32 or 64x64 images, the data is {height}x{width}; "
                        "set data.image_size to 32 or 64")
    d_width = cfg.d_conv_width or cfg.conv_width
    codes = cfg.z_categories if cfg.code_batch_norm else 0
    if height == 28:
        g: Generator = DCGAN28Generator(latent_width(cfg), channels, cfg.conv_width, cfg.g_output, classes, codes,
                                        cfg.code_batch_norm_scale)
        d: Discriminator = DCGAN28Discriminator(channels, d_width, cfg.pack, classes, cfg.d_dropout,
                                                cfg.d_batch_norm)
    else:
        g = DCGANGenerator(latent_width(cfg), channels, height, cfg.conv_width, cfg.g_output, classes, codes,
                           cfg.code_batch_norm_scale)
        # Spectral norm replaces batch norm in D, as in Miyato et al. 2018.
        d = DCGANDiscriminator(channels, height, d_width, cfg.pack, classes, batch_norm=not cfg.spectral_norm)
    init_weights(g, cfg.init, cfg.init_std)
    init_weights(d, cfg.init, cfg.init_std)
    if cfg.spectral_norm:
        with_spectral_norm(d)
    return g, d
