"""The arithmetic of a training step: float32, or bfloat16 autocast (train.precision).

With bfloat16, autocast casts each float32 weight of a linear or convolutional layer to bfloat16 at
every forward, one small copy per weight, and every backward casts each weight's gradient back
through one more autograd node per weight. On a CPU, for small networks (the MLP GAN at batch 64),
those copies were a fifth of the step. So on CPUs, during a training step, those layers compute
with bfloat16 buffers filled from the float32 weights in one batched copy per network, after each
optimiser step that moved them; their gradients come back to float32 in one batched copy before the
optimiser step. Autocast finds the weights already in bfloat16 and leaves them alone: the arithmetic
is autocast's, bit for bit (tests/test_trainer.py). The bytes copied are the same; the copies are
batched and their autograd nodes gone, which made the MLP step at batch 64 1.5% faster
(docs/benchmarks.md).

Outside the step (EMA, checkpoints, snapshots, sampling, guards) every network holds its float32
weights as always: a swap of `Parameter.data`, with no state of its own to save or resume.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

# The layers whose weights autocast casts to bfloat16 (its lower-precision list: linear, convolutions).
CAST_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
               nn.ConvTranspose3d)


def resolve_precision(precision: str, device: torch.device, is_image: bool) -> str:
    """train.precision = auto: bf16 for image networks where the device computes it fast, else fp32.
    GPUs: those with bfloat16 units (Ampere and later). CPUs: those with bfloat16 arithmetic of
    their own, AMX tiles (Intel Sapphire Rapids and later) or AVX-512-BF16 (Intel Cooper Lake, AMD
    Zen 4 and later), which oneDNN uses for bfloat16 matrix products and convolutions
    (measured on both: AMX 1.7-1.8x the fp32 DCGAN step, AVX-512-BF16 on an AMD EPYC 1.1-2.3x the
    fp32 step of every benchmark row; docs/benchmarks.md). Other CPUs emulate bfloat16 (one ran it
    12x slower) and stay fp32. Vector data stays fp32: its networks are small (nothing to gain) and
    bfloat16's 8-bit mantissa would blur coordinates in raw units (seed-quadratic's y reaches 2,510)."""
    if precision != "auto":
        return precision
    if not is_image:
        return "fp32"
    if device.type == "cuda":  # is_bf16_supported() also counts emulation (T4, V100): compute capability 8+
        return "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp32"
    return "bf16" if device.type == "cpu" and cpu_computes_bf16() else "fp32"


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic of its own (AMX tiles or AVX-512-BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # absent in older torch: False
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def cast_weights(net: nn.Module) -> list[nn.Parameter]:
    """The weights of `net` that autocast would cast: those of plain linear and convolutional layers
    (a layer with a parametrisation, e.g. spectral norm, computes its weight and is left alone)."""
    found = []
    for layer in net.modules():
        if isinstance(layer, CAST_LAYERS) and not hasattr(layer, "parametrizations"):
            found += [p for p in (layer.weight, layer.bias) if p is not None and p.requires_grad]
    return found


class _NetworkCopies:
    """One network's float32 weights and their bfloat16 buffers."""

    def __init__(self, params: list[nn.Parameter]):
        self.params = params
        self.full = [p.data for p in params]
        self.low = [torch.empty_like(p, dtype=torch.bfloat16) for p in params]
        self.grads = [torch.empty_like(p) for p in params]
        self.in_low = False

    def use_low(self) -> None:
        if self.in_low:
            return
        torch._foreach_copy_(self.low, self.full)  # the weights may have moved since the last copy
        for p, low in zip(self.params, self.low):
            p.data = low
        self.in_low = True

    def use_full(self) -> None:
        """Back to the float32 weights; gradients computed in bfloat16 come back as float32 (a
        gradient already float32, from an earlier switch back, stays as it is)."""
        if not self.in_low:
            return
        grads = [p.grad for p in self.params]
        for p, full in zip(self.params, self.full):
            p.grad = None
            p.data = full
        self.in_low = False
        fresh = [i for i, g in enumerate(grads) if g is not None and g.dtype == torch.bfloat16]
        if fresh:
            torch._foreach_copy_([self.grads[i] for i in fresh], [grads[i] for i in fresh])
        for i in fresh:
            grads[i] = self.grads[i]
        for p, g in zip(self.params, grads):
            p.grad = g


class Precision:
    """train.precision for one run's networks: `autocast()` around forward passes, and on CPUs the
    bfloat16 weight buffers (see the module's docstring). `during_step()` wraps a step's updates;
    inside it each network switches to its bfloat16 buffers when it is called (a forward pre-hook),
    and `use_full(params)` switches it back to its float32 weights and gradients once its backward
    passes are done, before its optimiser steps. The buffers are left out across processes (their
    gradients are averaged in float32 before the step), on GPUs (autocast's casts are cheap there;
    not measured) and for vector data (float32 unless asked; its article snapshots read the networks
    in the middle of a step)."""

    def __init__(self, precision: str, device: torch.device, is_image: bool, nets: list[nn.Module],
                 processes: int = 1):
        self.device, self.bf16 = device, resolve_precision(precision, device, is_image) == "bf16"
        self.active = False
        self.copies: dict[nn.Module, _NetworkCopies] = {}
        if not (self.bf16 and device.type == "cpu" and processes == 1 and is_image):
            return
        for net in nets:
            self.copies[net] = copies = _NetworkCopies(cast_weights(net))
            if copies.params:
                net.register_forward_pre_hook(self._before_forward)

    def autocast(self) -> torch.autocast:
        """bfloat16 forward passes where PyTorch deems it safe (matrix products, convolutions);
        losses and reductions stay float32. bfloat16 has float32's range, so no loss scaling is
        needed (float16 would need a GradScaler)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _before_forward(self, net: nn.Module, _inputs) -> None:
        copies = self.copies.get(net)  # a copy of a network carries the hook but is not among these
        if self.active and copies is not None:
            copies.use_low()

    @contextmanager
    def during_step(self) -> Iterator[None]:
        self.active = bool(self.copies)
        try:
            yield
        finally:
            self.active = False
            for copies in self.copies.values():
                copies.use_full()

    def use_full(self, params: list[nn.Parameter]) -> None:
        """The network owning `params` (G's or D's list) back on its float32 weights, its gradients
        in float32: call after its last backward pass that needs its bfloat16 weights."""
        ids = {id(p) for p in params}
        for copies in self.copies.values():
            if copies.params and id(copies.params[0]) in ids:
                copies.use_full()
