"""What every gankit network shares: optional class conditioning and a logit from features.

A generator maps z (and a label, when conditional) to a sample. A discriminator computes a feature
vector h(x) and returns the logit w.h + b, plus <embed(y), h> when conditional: the projection
discriminator of Miyato & Koyama (2018).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from gankit.models.noise import categories_of


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """The module in eval mode (batch norm on running statistics, no dropout) for the block, then
    back in whatever mode it was in."""
    was_training = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was_training)


class Dropout(nn.Dropout):
    """nn.Dropout with a cheaper mask on CPUs, where PyTorch's draws one 32-bit random number per
    element (bernoulli_: measured 4x the time of this one, a fifth of a DCGAN step with dropout in D).
    Here each 64-bit draw gives four 16-bit numbers; an element is dropped with probability
    round(p * 65536) / 65536 (within 1e-5 of p). Same global random stream as nn.Dropout, so runs stay
    reproducible and resumable. The numbers are placed in the batch's memory order (channels-last
    in the DCGANs): multiplying a channels-last batch by an NCHW mask ran PyTorch's mixed-layout
    elementwise path, 2-3x slower. (Versions before 2026-12-06 placed them in NCHW order, so a
    channels-last run saved by one resumes with other masks.) Other devices, and rates so close to 1
    that 16 bits cannot tell them from 1, use PyTorch's own dropout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dropped = round(self.p * 65536)  # of 65536 equally likely 16-bit numbers
        if not self.training or self.p == 0 or x.device.type != "cpu" or dropped >= 65536:
            return super().forward(x)
        n = x.numel()
        bits = torch.randint(-2**63, 2**63 - 1, ((n + 3) // 4,), dtype=torch.int64).view(torch.int16)[:n]
        keep = in_memory_order(bits, x) >= -32768 + dropped
        # Converted through uint8 (the same 0 / 1 bytes): PyTorch's bool -> bfloat16 conversion is an
        # unvectorised path; for a 128x64x14x14 batch the mask and multiply took 1.7-1.9 ms through
        # bool, 0.8-1.1 ms through uint8.
        mask = keep.view(torch.uint8).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * mask  # one multiply forward, one backward


def in_memory_order(numbers: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A contiguous 1-d tensor of x.numel() numbers as a tensor of x's shape whose i-th number in
    memory sits on x's i-th element in memory, for x contiguous or channels-last 4-d (so elementwise
    work between the two stays in one layout); in row-major order for any other x."""
    if is_channels_last(x):
        n, c, h, w = x.shape
        return numbers.view(n, h, w, c).permute(0, 3, 1, 2)
    return numbers.view(x.shape)


def is_channels_last(t: torch.Tensor) -> bool:
    """Whether t is a 4-d tensor laid out channels-last and not also row-major (a 4-d tensor with
    one channel, or 1x1 images, is both: no conversion between the two is needed for it)."""
    return t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)


class _FlattenKeepingGradientFormat(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.shape = x.shape
        ctx.channels_last = is_channels_last(x)
        return x.flatten(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.reshape(ctx.shape)
        return grad.contiguous(memory_format=torch.channels_last) if ctx.channels_last else grad


class Flatten(nn.Flatten):
    """nn.Flatten (NCHW order, whatever the memory format) whose gradient goes back in the memory
    format of its input. Why: flattening a channels-last tensor copies it to NCHW order, and autograd
    would hand the layers below an NCHW gradient beside their channels-last activations. PyTorch's
    elementwise backward kernels run 20x slower on such mixed layouts (leaky_relu_backward on
    128x32x7x7: 400 us against 20 us), which was a tenth of the mnist-dcgan step."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.start_dim != 1 or self.end_dim != -1 or x.dim() != 4:
            return super().forward(x)
        return _FlattenKeepingGradientFormat.apply(x)


def like_weight(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """x in the memory format of the layer's 4-d weight (channels-last when the trainer made the
    network so), so that the convolution and its backward need no layout conversion."""
    if not is_channels_last(layer.weight):
        return x
    return x.contiguous(memory_format=torch.channels_last)


def has_batch_norm(module: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


def without_batch_norm(module: nn.Module) -> nn.Module:
    """The module with every batch-norm layer replaced by the identity (in place), for networks
    that must judge each sample on its own; it then takes real and generated batches together."""
    for parent in list(module.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, nn.Identity())
    if hasattr(module, "joint_batch"):
        module.joint_batch = True
    return module


class Generator(nn.Module):
    """Subclasses define `decode(inputs, y)`. A conditional generator either gets a label embedding
    of `embed_dim` appended to z (inputs), or, with embed_dim 0, uses the labels y itself (through
    ConditionalBatchNorm layers). An unconditional G with code_categories > 0 (model.code_batch_norm)
    takes the labels of those layers from the one-hot categorical code at the end of its latent; with
    code_scale False the category picks only their shift (model.code_batch_norm_scale)."""

    def __init__(self, z_dim: int, num_classes: int = 0, embed_dim: int = 0, code_categories: int = 0,
                 code_scale: bool = True):
        super().__init__()
        if num_classes and code_categories:
            raise ValueError("a generator takes class labels or categories from its code, not both")
        self.z_dim, self.num_classes, self.code_categories = z_dim, num_classes, code_categories
        self.embed = nn.Embedding(num_classes, embed_dim) if num_classes and embed_dim else None
        self.in_dim = z_dim + (embed_dim if self.embed is not None else 0)
        self.norm_classes = num_classes or code_categories  # what G's ConditionalBatchNorm layers are keyed on
        self.norm_scale = bool(num_classes) or code_scale  # whether they look up a scale as well as a shift

    def batch_norm(self, features: int, image: bool = True) -> nn.Module:
        """One of G's batch norms, keyed as this generator's are (norm_classes, norm_scale)."""
        return batch_norm(features, self.norm_classes, image, self.norm_scale)

    def decode(self, inputs: torch.Tensor, y: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if self.num_classes and y is None:
            raise ValueError("a conditional generator needs labels")
        if self.code_categories:
            y = categories_of(z, self.z_dim - self.code_categories)
        if self.embed is not None:
            z = torch.cat([z, self.embed(y)], dim=1)
        return self.decode(z, y)


class ConditionalBatchNorm(nn.Module):
    """Batch norm whose scale and shift are looked up per class (de Vries et al. 2017, as in Miyato &
    Koyama 2018's conditional generators); plain batch norm when num_classes is 0.

    Why not append a label embedding to z: batch norm after G's first layer then normalises with
    statistics dominated by the ten class offsets, shrinking what z contributes within a class, and G
    learns one image per class. Here the statistics come from z alone and the label moves them after.

    With scale False only the shift is looked up and no scale is learnt at all (the next layer, linear
    after a (Leaky)ReLU, can absorb a positive per-channel scale; model.code_batch_norm_scale). A per-category
    scale can silence what z writes within a category; on MNIST the shift alone collapsed G to one
    image per category too, on another seed (docs/results.md).
    """

    def __init__(self, features: int, num_classes: int = 0, image: bool = True, scale: bool = True):
        super().__init__()
        norm = nn.BatchNorm2d if image else nn.BatchNorm1d
        self.norm = norm(features, affine=not num_classes)
        self.gain = nn.Embedding(num_classes, features) if num_classes and scale else None
        self.shift = nn.Embedding(num_classes, features) if num_classes else None
        if self.gain is not None:
            nn.init.ones_(self.gain.weight)
        if self.shift is not None:
            nn.init.zeros_(self.shift.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm(x)
        if self.shift is None:
            return x
        view = (-1, x.shape[1]) + (1,) * (x.dim() - 2)
        if self.gain is not None:
            x = x * self.gain(y).view(view)
        return x + self.shift(y).view(view)


def batch_norm(features: int, num_classes: int = 0, image: bool = True, scale: bool = True) -> nn.Module:
    """Conditional batch norm for a conditional G; plain batch norm otherwise (whose weights keep the
    names unconditional checkpoints have always used)."""
    if num_classes:
        return ConditionalBatchNorm(features, num_classes, image, scale)
    return nn.BatchNorm2d(features) if image else nn.BatchNorm1d(features)


class ConditionedSequential(nn.Sequential):
    """nn.Sequential that hands the labels to the layers that take them (ConditionalBatchNorm)."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, y) if isinstance(layer, ConditionalBatchNorm) else layer(x)
        return x


class Discriminator(nn.Module):
    """Subclasses define `features(x)` (with PacGAN packing applied) and set `feature_dim`."""

    pack = 1
    joint_batch = True  # real and generated batches may share one forward pass (False with batch norm)

    def init_head(self, feature_dim: int, num_classes: int) -> None:
        self.logit = nn.Linear(feature_dim, 1)
        self.project = nn.Embedding(num_classes, feature_dim) if num_classes else None
        self.code: nn.Module | None = None  # InfoGAN's Q head, added by add_code_head

    def add_code_head(self, categories: int, hidden: int = 0) -> None:
        """InfoGAN's Q: a head on D's features giving, for each sample (each of a packed group's
        `pack`), the logits of G's categorical code; trained with D, sharing its features. One linear
        layer, or with `hidden` > 0 a hidden layer of that width and a LeakyReLU before it (Chen et
        al.'s Q on MNIST had 128)."""
        out = self.pack * categories
        if not hidden:
            self.code = nn.Linear(self.logit.in_features, out)
            return
        self.code = nn.Sequential(nn.Linear(self.logit.in_features, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, out))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None,
                with_code: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The logits, one per sample (per packed group); with_code: also the code logits, one row
        of `categories` per sample, from the same features."""
        h = self.features(x)
        out = self.logit(h).squeeze(1)
        if self.project is not None:
            if y is None:
                raise ValueError("a conditional discriminator needs labels")
            out = out + (self.project(y[:: self.pack]) * h).sum(1)
        if not with_code:
            return out
        if self.code is None:
            raise ValueError("this discriminator has no code head: call add_code_head(categories) first")
        return out, self.code(h).reshape(len(x), -1)
