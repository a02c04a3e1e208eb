"""Your own networks: a plain `nn.Module` G and D, adapted to what gankit's training loop calls.

G: module(z) -> a batch of samples shaped like the data (vectors (N, dim), images (N, C, H, W) in
the range of `model.g_output`: tanh [-1, 1] by default for images). D: module(x) -> one logit per
sample ((N,) or (N, 1)). Everything else (losses, stabilisers, EMA, checkpoints and resume,
metrics, the report) is gankit's. `gankit.GAN(generator=G, discriminator=D)` registers them as the
model `python` of this process; a run trained so is reloaded with the same modules
(`gankit.load(RUN, generator=G, discriminator=D)`).
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from gankit.config import ModelConfig
from gankit.errors import UserError
from gankit.models.base import Discriminator, Generator, has_batch_norm
from gankit.models.noise import latent_width

NAME = "python"


class PlainGenerator(Generator):
    def __init__(self, module: nn.Module, z_dim: int):
        super().__init__(z_dim)
        self.net = module

    def decode(self, inputs: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        return self.net(inputs)


class PlainDiscriminator(Discriminator):
    def __init__(self, module: nn.Module):
        super().__init__()
        self.net = module
        self.joint_batch = not has_batch_norm(module)  # batch norm: real and generated batches apart

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The module's own `features(x)` when it has one (drawn as D's feature layer), else its logit."""
        own = getattr(self.net, "features", None)
        return own(x) if callable(own) else self.net(x).reshape(len(x), 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.net(x).reshape(len(x))


def plain_builder(generator: nn.Module, discriminator: nn.Module) -> Callable:
    """A model builder (as MODELS holds) that gives fresh copies of the two modules as they are now:
    every build (training, the rejection critic, sampling) starts from the user's initial weights."""
    g0, d0 = copy.deepcopy(generator), copy.deepcopy(discriminator)

    def build(cfg: ModelConfig, shape: tuple[int, ...], num_classes: int = 0) -> tuple[Generator, Discriminator]:
        if num_classes and cfg.conditional:
            raise UserError("networks passed from Python are unconditional; set model.conditional = false")
        if cfg.pack > 1:
            raise UserError(f"model.pack = {cfg.pack}: a discriminator passed from Python judges one sample at a "
                            "time; set model.pack = 1 (or pack inside your own module)")
        g, d = PlainGenerator(copy.deepcopy(g0), latent_width(cfg)), PlainDiscriminator(copy.deepcopy(d0))
        _check_shapes(g, d, latent_width(cfg), shape)
        return g, d

    return build


@torch.no_grad()
def _check_shapes(g: PlainGenerator, d: PlainDiscriminator, z_width: int, shape: tuple[int, ...]) -> None:
    """A clear error when the modules do not fit the data or model.z_dim, before any training."""
    g.eval(), d.eval()
    device = next(iter(g.parameters()), torch.zeros(0)).device  # the modules may already sit on a GPU
    try:
        out = g(torch.zeros(2, z_width, device=device))
    except RuntimeError as exc:
        raise UserError(f"your generator does not take noise of width {z_width} (model.z_dim): "
                        f"{str(exc).splitlines()[0]}; set model.z_dim to its input width") from None
    if tuple(out.shape[1:]) != tuple(shape):
        raise UserError(f"your generator makes samples shaped {tuple(out.shape[1:])}, the data's are {tuple(shape)}")
    try:
        logits = d.net(torch.zeros(2, *shape, device=next(iter(d.parameters()), torch.zeros(0)).device))
    except RuntimeError as exc:
        raise UserError(f"your discriminator does not take samples shaped {tuple(shape)}: "
                        f"{str(exc).splitlines()[0]}") from None
    if logits.numel() != 2:
        raise UserError(f"your discriminator must give one logit per sample, (N,) or (N, 1); it gave "
                        f"{tuple(logits.shape)} for 2 samples")
    g.train(), d.train()
