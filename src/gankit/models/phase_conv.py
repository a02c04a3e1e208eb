"""The image-side layers of the 28x28 DCGAN (D's first convolution, G's last transposed one), computed
on CPUs as a 3x3 stride-1 convolution over the image's four 2x2 phases.

Why: with one image channel on one side, oneDNN's 5x5 stride-2 kernels run at a few GFLOP/s. On a
2-core Xeon, G's last layer (16 -> 1 channels, batch 128) took 5.5 ms forward and backward, D's first
(1 -> 16, batch 256) 13 ms, a third of the mnist-dcgan step. The same arithmetic as a stride-1
convolution with four times the channels on the narrow side (pixel_unshuffle before D's layer,
pixel_shuffle after G's) took 3.0 ms and 4.8 ms, and made the whole step 1.28x faster (docs/benchmarks.md).

The layers keep the nn.Conv2d / nn.ConvTranspose2d parameters (same names, shapes and
initialisation; checkpoints are interchangeable) and differ from them only by float rounding.
They run on CPUs in float32 and on train.precision = bf16's bfloat16 weight buffers (there the two
layers ran 1.2-1.6x faster on a 2-core AMD EPYC; the whole step's gain was within that machine's
run-to-run spread). On other devices, and under autocast with float32 weights (bf16 across
processes), they run PyTorch's own kernels: the rewrite was not measured on GPUs, and under
autocast each call would cast its rearranged weight anew, so a weight's gradients from D's several
calls in a step would sum in float32 instead of in bfloat16 as autocast's cached cast of a stock
layer's weight sums them.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def phase_weight(weight: torch.Tensor) -> torch.Tensor:
    """A 5x5 stride-2 padding-2 convolution's weight [O, C, 5, 5] as the weight [O, 4C, 3, 3] of the
    stride-1 padding-1 convolution over pixel_unshuffle(x, 2) that computes the same output.

    Tap a of the 5x5 kernel reads input row 2i + a - 2 = 2(i + m) + s, so it belongs to phase
    s = a % 2 at offset m = a // 2 - 1; a sixth, zero tap fills phase 1's third offset.
    """
    out_ch, in_ch = weight.shape[:2]
    taps = F.pad(weight, (0, 1, 0, 1)).reshape(out_ch, in_ch, 3, 2, 3, 2)  # [o, c, m_row, s_row, m_col, s_col]
    return taps.permute(0, 1, 3, 5, 2, 4).reshape(out_ch, in_ch * 4, 3, 3)


def _phases_apply(layer: nn.Module, x: torch.Tensor) -> bool:
    # Under autocast only on the bf16 buffers, whose weights autocast does not cast again.
    weights_uncast = not torch.is_autocast_enabled("cpu") or layer.weight.dtype == torch.bfloat16
    even_image = x.shape[-1] % 2 == 0 and x.shape[-2] % 2 == 0
    return (x.device.type == "cpu" and weights_uncast and even_image and layer.kernel_size == (5, 5)
            and layer.stride == (2, 2) and layer.padding == (2, 2) and layer.dilation == (1, 1) and layer.groups == 1)


class PhaseConv2d(nn.Conv2d):
    """nn.Conv2d(C, O, 5, stride=2, padding=2) that runs as pixel_unshuffle + a 3x3 convolution on CPUs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not _phases_apply(self, x):
            return super().forward(x)
        phases = F.pixel_unshuffle(x, 2).contiguous(memory_format=torch.channels_last)
        weight = phase_weight(self.weight).contiguous(memory_format=torch.channels_last)
        return F.conv2d(phases, weight, self.bias, padding=1)


class PhaseConvTranspose2d(nn.ConvTranspose2d):
    """nn.ConvTranspose2d(C, O, 5, stride=2, padding=2, output_padding=1), which doubles the image
    size, run on CPUs as a 3x3 convolution + pixel_shuffle. It is the adjoint of PhaseConv2d's
    rewrite: the transposed stride-1 3x3 convolution is a convolution with the kernel flipped."""

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        if not _phases_apply(self, x) or self.output_padding != (1, 1) or output_size:
            return super().forward(x, output_size)
        # ConvTranspose2d's weight is [C_in, C_out, 5, 5], the weight of the conv it transposes.
        weight = phase_weight(self.weight).transpose(0, 1).flip(2, 3).contiguous(memory_format=torch.channels_last)
        # Output channel c is phase channels 4c..4c+3 of the convolution, so each takes c's bias.
        bias = None if self.bias is None else self.bias.repeat_interleave(4)
        return F.pixel_shuffle(F.conv2d(x.contiguous(memory_format=torch.channels_last), weight, bias, padding=1), 2)
