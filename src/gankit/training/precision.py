"""The arithmetic of a training step: float32, or bfloat16 or float16 autocast (train.precision).

With bfloat16, autocast casts each float32 weight of a linear or convolutional layer to bfloat16 at
every forward, one small copy per weight, and every backward casts each weight's gradient back
through one more autograd node per weight. On a CPU, for small networks (the MLP GAN at batch 64),
those copies were a fifth of the step. So on CPUs, during a training step, those layers compute
with bfloat16 buffers filled from the float32 weights in one batched copy per network, after each
optimiser step that moved them; their gradients come back to float32 in one batched copy before the
optimiser step. Autocast finds the weights already in bfloat16 and leaves them alone: the arithmetic
is autocast's, bit for bit (tests/test_trainer.py), except in the 28x28 DCGAN's phase layers, which
run on the buffers only and round otherwise (models/phase_conv.py). The bytes copied are the same;
the copies are batched and their autograd nodes gone, which made the MLP step at batch 64 1.5%
faster (docs/benchmarks.md).

With Adam, gankit's own kernel (training/adam_kernel.py, train.adam_kernel) takes both copies out:
it steps the float32 weights from the bfloat16 gradients and writes the new bfloat16 buffers in the
same pass. A buffer it wrote is used as it is until its weight changes by any other way that
PyTorch counts (a checkpoint load, an optimiser step, an in-place write through the parameter: the
version counters tell; a write through `p.data` goes uncounted, as autograd does not see it either).

Outside the step (EMA, checkpoints, snapshots, sampling, guards) every network holds its float32
weights as always: a swap of `Parameter.data`, with no state of its own to save or resume.

float16 (train.precision = fp16, for GPUs with float16 tensor cores but no bfloat16 units: compute
capability 7) autocasts the same layers to float16. Its range ends at 65,504 and its
smallest normal number is 6e-5, so each network's loss is scaled before its backward pass and its
gradients unscaled before its optimiser step (a GradScaler per network: each scale follows its own
network's gradients; a step whose gradients overflowed is skipped and the scale halved). The
scalers' state is part of a checkpoint, so a resume continues bit for bit.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
import platform
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, NamedTuple

import torch
from torch import nn

from gankit.io import atomic_write_text, cache_dir
from gankit.training import adam_kernel as kernels

# The layers whose weights autocast casts to bfloat16 (its lower-precision list: linear, convolutions).
CAST_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d,
               nn.ConvTranspose3d)


# autocast's type for each lower precision
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# bfloat16 must beat float32 by this factor in the CPU probe to be chosen: at about equal speed
# float32's arithmetic is the better one.
BF16_MIN_SPEEDUP = 1.1
# What a checkpoint written before checkpoints recorded the choice resumes with: those versions'
# auto gave bf16 on every CPU with bfloat16 instructions, the only CPUs where a saved choice counts.
SAVED_BEFORE_RECORDING = {"name": "bf16", "device": "cpu"}


class PrecisionChoice(NamedTuple):
    name: str  # "fp32", "bf16" or "fp16"
    speedup: float | None = None  # what the CPU probe measured, when it decided

    def saved(self, device: torch.device) -> dict[str, str]:
        """What a checkpoint keeps, so that a resume on this kind of device keeps the arithmetic."""
        return {"name": self.name, "device": device.type}

    def note(self) -> str | None:
        """The line the run's log gives when the probe decided."""
        if self.speedup is None:
            return None
        return (f"train.precision = auto: {self.name} (bfloat16 layers ran at {self.speedup:.2f}x float32's "
                f"speed on this CPU; bf16 needs {BF16_MIN_SPEEDUP}x; timed once for this machine, kept in "
                f"{cache_dir() / PROBE_FILE})")


def resolve_precision(precision: str, device: torch.device, is_image: bool, threads: int,
                      saved: dict[str, str] | None = None) -> PrecisionChoice:
    """train.precision = auto: bf16 for image networks where the device computes it fast, else fp32.
    GPUs: those with bfloat16 units (Ampere and later). CPUs: those with bfloat16 instructions of
    their own (AMX tiles, AVX-512-BF16) where bfloat16 layers also ran faster than float32 ones in
    a timed probe (`cpu_bf16_speedup`, on the run's `threads`): having the instructions is not
    enough. An AMD EPYC with AVX-512-BF16 ran every benchmark row 1.1-2.3x faster in bf16, but an
    Intel Xeon with AVX-512-BF16 and its AMX hidden by the hypervisor ran the DCGAN step at 0.75-0.9x
    and the MLP GAN's at 0.6x (docs/benchmarks.md). CPUs without them emulate bfloat16 (one ran it
    12x slower) and stay fp32, unprobed. Vector data stays fp32: its networks are small (nothing to
    gain) and bfloat16's 8-bit mantissa would blur coordinates in raw units (seed-quadratic's y
    reaches 2,510).

    `saved`: the choice kept in the checkpoint a run resumes from. On a CPU with bfloat16
    instructions, a run that started on a CPU keeps it, so a probe that times otherwise today cannot
    change its arithmetic halfway (exact resume); anywhere else auto resolves again."""
    if precision != "auto":
        return PrecisionChoice(precision)
    if not is_image:
        return PrecisionChoice("fp32")
    if device.type == "cuda":
        return PrecisionChoice(cuda_precision(torch.cuda.get_device_capability(device)))
    if device.type != "cpu" or not cpu_computes_bf16():
        return PrecisionChoice("fp32")
    if saved is not None and saved.get("device") == "cpu" and saved.get("name") in ("fp32", "bf16"):
        return PrecisionChoice(saved["name"])
    speedup = cpu_bf16_speedup(threads)
    return PrecisionChoice("bf16" if speedup >= BF16_MIN_SPEEDUP else "fp32", speedup)


def cuda_precision(capability: tuple[int, int]) -> str:
    """auto's choice on a GPU of this compute capability: bf16 where it has bfloat16 units (8 and
    later: Ampere, Ada, Hopper; is_bf16_supported() also counts emulation), else fp32. GPUs with
    float16 tensor cores only (7: V100, T4, the RTX 20 series) can run train.precision = fp16, but
    auto does not pick it: its GAN quality is measured on one seed of mnist-mlp only (a CPU emulates
    float16 about 20x slower than float32, too slow for the quality runs a default needs), and its
    speed on a GPU not at all (docs/benchmarks.md)."""
    return "bf16" if capability[0] >= 8 else "fp32"


def fp16_scalers(device: torch.device, optimizers: tuple[torch.optim.Optimizer, ...]) -> dict[int, object]:
    """A loss scaler for each optimiser, keyed by its id: float16 without them would train on
    gradients that underflow to 0 or overflow to inf."""
    if not optimizers:
        raise ValueError("float16 needs the optimisers, to scale each one's loss")
    return {id(opt): torch.amp.GradScaler(device.type) for opt in optimizers}


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bfloat16 arithmetic of its own (AMX tiles or AVX-512-BF16)."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # absent in older torch: False
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


# Each probe times the two precisions this many times, alternating (about 0.15 s a round).
PROBE_ROUNDS = 4
PROBE_FILE = "cpu-precision.json"
PROBE_VERSION = 2  # part of the record's key: a changed probe times afresh


@functools.lru_cache(maxsize=None)
def cpu_bf16_speedup(threads: int) -> float:
    """float32's time over bfloat16's for a forward and backward pass of a convolution and a linear
    layer of a small GAN's sizes, on `threads` threads: above 1, bfloat16 is the faster here.

    Timed once per machine: the ratio is kept in the cache folder (io.cache_dir(), PROBE_FILE) under
    the CPU's model and instruction flags, PyTorch's version and the thread count, and later runs read
    it there. Why: timed afresh at each start, a moment of load from another program sent one run in
    about forty on a 2-core AMD EPYC to the other arithmetic (0.99x where its runs measured 1.6-2.7x),
    so the same command and seed trained differently. Delete the file to time again."""
    key = f"{cpu_identity()} | torch {torch.__version__} | {threads} threads | probe {PROBE_VERSION}"
    kept = _kept_probes()
    value = kept.get(key)
    if type(value) in (int, float) and math.isfinite(value) and value > 0:
        return float(value)
    speedup = _timed_bf16_speedup(threads)
    try:  # two runs starting at once may both time it; the file is replaced whole, never mixed
        cache_dir().mkdir(parents=True, exist_ok=True)
        atomic_write_text(cache_dir() / PROBE_FILE, json.dumps({**kept, key: speedup}, indent=1, sort_keys=True))
    except OSError:
        pass  # a read-only home: probe again next time
    return speedup


def cpu_identity() -> str:
    """The CPU's model name and a digest of its instruction flags (Linux's /proc/cpuinfo), else what
    the platform module says: a changed CPU, or a hypervisor that now hides AMX, is another machine."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    fields = {}
    for name, _, value in (line.partition(":") for line in lines):
        if name.strip() in ("model name", "flags"):
            fields.setdefault(name.strip(), value.strip())  # the first CPU's
    if not fields:
        return f"{platform.machine()} {platform.processor()}".strip()
    flags = hashlib.sha256(" ".join(sorted(fields.get("flags", "").split())).encode()).hexdigest()[:12]
    return f"{fields.get('model name', platform.machine())} (flags {flags})"


def _kept_probes() -> dict:
    try:
        kept = json.loads((cache_dir() / PROBE_FILE).read_text())
    except (OSError, ValueError):
        return {}  # none yet, or damaged: timed again and rewritten
    return kept if isinstance(kept, dict) else {}


def _timed_bf16_speedup(threads: int) -> float:
    """The best timing of each precision over PROBE_ROUNDS alternating rounds (best of 3 each).
    The layers' initial weights draw on PyTorch's global random stream, which dropout draws on
    later: the probe forks it, so a seeded run is the same whether or not the probe ran."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            rounds = [(_layer_seconds(torch.float32), _layer_seconds(torch.bfloat16)) for _ in range(PROBE_ROUNDS)]
    finally:
        torch.set_num_threads(before)
    return min(f for f, _ in rounds) / min(b for _, b in rounds)


def _layer_seconds(dtype: torch.dtype, repeats: int = 3) -> float:
    """The best of `repeats` timings of one forward and backward pass through two layers in `dtype`
    (D's second convolution of the tutorial DCGAN at half width, channels-last, and a 512-wide linear
    layer), after one untimed pass that lets oneDNN build its kernels."""
    conv = nn.Conv2d(32, 64, 5, 2, 2).to(dtype=dtype, memory_format=torch.channels_last)
    linear = nn.Linear(512, 512).to(dtype)
    generator = torch.Generator().manual_seed(0)
    image = torch.randn(64, 32, 14, 14, generator=generator).to(dtype, memory_format=torch.channels_last)
    rows = torch.randn(256, 512, generator=generator).to(dtype)
    image.requires_grad_()
    rows.requires_grad_()

    def one_pass() -> None:
        conv(image).float().sum().backward()
        linear(rows).float().sum().backward()

    one_pass()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        one_pass()
        best = min(best, time.perf_counter() - start)
    return best


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
        self.pending: list[torch.Tensor | None] = []  # bfloat16 gradients from the last backward, not yet stepped
        # each buffer's weight versions (through the parameter, through its float32 tensor) when the
        # Adam kernel last filled it; None: refill at the next use
        self.filled_at: list[tuple[int, int] | None] = [None] * len(params)
        self.in_low = False

    def use_low(self) -> None:
        if self.in_low:
            return
        # the buffers the Adam kernel filled are current while their weights have not moved since
        stale = [i for i, at in enumerate(self.filled_at) if at != self._versions(i)]
        if stale:
            torch._foreach_copy_([self.low[i] for i in stale], [self.full[i] for i in stale])
        for p, low in zip(self.params, self.low):
            p.data = low
        self.in_low = True

    def use_full(self) -> None:
        """Back to the float32 weights. Gradients computed in bfloat16 wait in `pending` for the
        optimiser step (`step`), which takes them as they are or in float32 (a gradient already
        float32, from an earlier switch back, stays on its weight)."""
        if not self.in_low:
            return
        grads = [p.grad for p in self.params]
        for p, full in zip(self.params, self.full):
            p.grad = None
            p.data = full
        self.in_low = False
        self.pending = [g if g is not None and g.dtype == torch.bfloat16 else None for g in grads]
        for p, g in zip(self.params, grads):
            if g is not None and g.dtype != torch.bfloat16:
                p.grad = g

    def step(self, opt: torch.optim.Optimizer, kernel) -> None:
        """The optimiser step for this network: the weights with bfloat16 gradients through gankit's
        Adam kernel where it can take them (it refills their buffers too), else with the gradients in
        float32 through `opt`, as are the network's other weights."""
        ready = [i for i, g in enumerate(self.pending) if g is not None]
        stepper = getattr(opt, "step_bf16", None)
        if ready and kernel is not None and stepper is not None and stepper(
                [self.params[i] for i in ready], [self.pending[i] for i in ready], [self.low[i] for i in ready],
                kernel, torch.get_num_threads()):
            for i in ready:
                self.filled_at[i] = self._versions(i)  # the kernel wrote through pointers: no new version
        else:
            self.grads_to_full()
        self.pending = []
        if any(p.grad is not None for group in opt.param_groups for p in group["params"]):
            opt.step()  # the weights left (LeanAdam and torch.optim skip those without a gradient)

    def _versions(self, i: int) -> tuple[int, int]:
        """A weight's in-place writes so far, as PyTorch counts them: through its parameter (a
        checkpoint load, an optimiser step, the kernel's count) and through its float32 tensor
        (each `.data` has a counter of its own) separately."""
        return self.params[i]._version, self.full[i]._version

    def grads_to_full(self) -> None:
        """The pending bfloat16 gradients, copied to float32 in one batched copy, onto their weights."""
        ready = [i for i, g in enumerate(self.pending) if g is not None]
        if ready:
            torch._foreach_copy_([self.grads[i] for i in ready], [self.pending[i] for i in ready])
        for i in ready:
            self.params[i].grad = self.grads[i]
        self.pending = []


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
                 processes: int = 1, adam_kernel: str = "auto", optimizers: tuple[torch.optim.Optimizer, ...] = ()):
        if precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"Precision takes a resolved precision (resolve_precision), not {precision!r}")
        self.device, self.bf16 = device, precision == "bf16"
        self.dtype = AUTOCAST_DTYPES.get(precision)  # None: float32, no autocast
        # float16's loss scaling: a scaler for each optimiser (each network), by the optimiser's id
        self.scalers = fp16_scalers(device, optimizers) if precision == "fp16" else {}
        self.active = False
        self.copies: dict[nn.Module, _NetworkCopies] = {}
        self.kernel: kernels.AdamKernel | None = None
        self.kernel_note: str | None = None  # for the run's log: which Adam steps the buffers' weights, and why
        if not (self.bf16 and device.type == "cpu" and processes == 1 and is_image):
            return
        for net in nets:
            self.copies[net] = copies = _NetworkCopies(cast_weights(net))
            if copies.params:
                net.register_forward_pre_hook(self._before_forward)
        if adam_kernel == "auto":
            found = kernels.load()
            if isinstance(found, kernels.AdamKernel):
                self.kernel = found
            else:
                self.kernel_note = (f"train.adam_kernel = auto: PyTorch's Adam, with the bfloat16 gradients copied to "
                                    f"float32 first: {found.reason}")

    def autocast(self) -> torch.autocast:
        """bfloat16 or float16 forward passes where PyTorch deems it safe (matrix products,
        convolutions); losses and reductions stay float32. bfloat16 has float32's range, so it needs
        no loss scaling; float16 has the scalers (`scaled`, `step`)."""
        return torch.autocast(self.device.type, dtype=self.dtype or torch.bfloat16, enabled=self.dtype is not None)

    def scaled(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> torch.Tensor:
        """The loss to call backward on for `opt`'s network: scaled by its scaler under float16."""
        scaler = self.scalers.get(id(opt))
        return loss if scaler is None else scaler.scale(loss)

    def scaler_states(self, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, dict] | None:
        """The scalers' state by the names of their optimisers, for a checkpoint (None: no scaling)."""
        if not self.scalers:
            return None
        return {name: self.scalers[id(opt)].state_dict() for name, opt in optimizers.items()}

    def load_scaler_states(self, states: dict[str, dict] | None, optimizers: dict[str, torch.optim.Optimizer]) -> None:
        """Scalers as a checkpoint saved them; a checkpoint without them (saved in another precision)
        leaves the scalers at their start."""
        for name, opt in optimizers.items():
            if states and name in states and id(opt) in self.scalers:
                self.scalers[id(opt)].load_state_dict(states[name])

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
        """The network owning `params` (G's or D's list) back on its float32 weights: call after its
        last backward pass that needs its bfloat16 weights. Its bfloat16 gradients wait for `step`."""
        copies = self._copies_of(params)
        if copies is not None:
            copies.use_full()

    def step(self, opt: torch.optim.Optimizer, params: list[nn.Parameter]) -> None:
        """`opt`'s step for the network owning `params`, after `use_full`: under float16 through its
        loss scaler; with its bfloat16 buffers, through gankit's Adam kernel (training/adam_kernel.py)
        where it can take the step, else with the gradients copied to float32 first."""
        scaler = self.scalers.get(id(opt))
        if scaler is not None:  # unscales, skips the step if a gradient overflowed, then moves the scale
            scaler.step(opt)
            scaler.update()
            return
        copies = self._copies_of(params)
        if copies is None:
            opt.step()
        else:
            copies.step(opt, self.kernel)

    def _copies_of(self, params: list[nn.Parameter]) -> _NetworkCopies | None:
        ids = {id(p) for p in params}
        for copies in self.copies.values():
            if copies.params and id(copies.params[0]) in ids:
                return copies
        return None
