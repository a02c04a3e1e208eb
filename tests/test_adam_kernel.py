"""gankit's compiled Adam step for bfloat16 CPU training (training/adam_kernel.py): PyTorch's fused
Adam's numbers, the buffers it refills, and PyTorch's kernels wherever it cannot be built."""
import contextlib
import json

import numpy as np
import pytest
import torch

from gankit import config
from gankit.data.images import ImageSource
from gankit.training import Trainer, adam_kernel
from gankit.training import checkpoint as ckpt
from gankit.training.optim import LeanAdam
from gankit.training.precision import _NetworkCopies

TINY_FLOAT = torch.finfo(torch.float32).tiny


@pytest.fixture
def kernel() -> adam_kernel.AdamKernel:
    found = adam_kernel.load()
    if isinstance(found, adam_kernel.Unavailable):
        pytest.skip(f"no Adam kernel on this machine: {found.reason}")
    return found


@pytest.fixture
def fresh_load():
    """load() forgets what it found before and after the test (it is cached per process)."""
    adam_kernel.load.cache_clear()
    yield
    adam_kernel.load.cache_clear()


def random_state(sizes, seed=0):
    gen = torch.Generator().manual_seed(seed)
    weights = [torch.randn(n, generator=gen) for n in sizes]
    avgs = [torch.randn(n, generator=gen) * 1e-3 for n in sizes]
    avg_sqs = [torch.rand(n, generator=gen) * 1e-6 for n in sizes]
    return weights, avgs, avg_sqs


@pytest.mark.parametrize("beta1, weight_decay", [(0.5, 0.0), (0.9, 0.0), (0.5, 0.01)])
@pytest.mark.parametrize("threads", [1, 2])
def test_kernel_steps_like_torch_fused_adam(kernel, beta1, weight_decay, threads):
    """Several tensors, sizes that do not fill the vectors, steps 1 to 4: the kernel's moments and
    weights are PyTorch's fused Adam's (given the same gradients in float32) in all but a few
    elements, which differ by at most a unit in the last place; the bfloat16 copies are the new
    weights rounded."""
    sizes = [1, 15, 100, 4099, 70_001]
    settings = {"lr": 2e-4, "beta1": beta1, "beta2": 0.999, "eps": 1e-8, "weight_decay": weight_decay}
    ours, theirs = random_state(sizes), random_state(sizes)
    copies = [torch.empty(n, dtype=torch.bfloat16) for n in sizes]
    gen = torch.Generator().manual_seed(1)
    for step in range(1, 5):
        grads = [(torch.randn(n, generator=gen) * 1e-2).bfloat16() for n in sizes]
        kernel.step(*ours[:1], grads, *ours[1:], copies, [step] * len(sizes), threads=threads, **settings)
        torch._fused_adam_(theirs[0], [g.float() for g in grads], theirs[1], theirs[2], [],
                           [torch.tensor(float(step)) for _ in sizes], amsgrad=False, maximize=False,
                           grad_scale=None, found_inf=None, **settings)
    for mine, reference in zip(ours, theirs):
        for a, b in zip(mine, reference):
            torch.testing.assert_close(a, b, rtol=2.0 ** -22, atol=0.0)
            assert (a != b).sum() <= 32  # PyTorch's scalar remainder loops; the rest bit for bit
    for copy, weight in zip(copies, ours[0]):
        assert torch.equal(copy, weight.bfloat16())


def test_kernel_flushes_denormals_on_every_thread_as_its_caller_does(kernel):
    """torch.set_flush_denormal reaches only the calling thread; the kernel's threads all compute in
    the caller's mode: moments that decay below float32's normal range are zero with the flush, kept
    without it, in every thread's share."""
    size = 1 << 18
    try:
        for flush in (True, False):
            torch.set_flush_denormal(flush)
            weights, avg, avg_sq = torch.ones(size), torch.full((size,), 1.5 * TINY_FLOAT), torch.ones(size)
            kernel.step([weights], [torch.zeros(size, dtype=torch.bfloat16)], [avg], [avg_sq],
                        [torch.empty(size, dtype=torch.bfloat16)], [3], lr=1e-3, beta1=0.5, beta2=0.999,
                        eps=1e-8, weight_decay=0.0, threads=2)
            denormal = (avg != 0) & (avg.abs() < TINY_FLOAT)  # every element is 0.75 x tiny, or 0 if flushed
            assert bool((avg == 0).all()) if flush else bool(denormal.all()), flush
    finally:
        torch.set_flush_denormal(False)  # as the suite runs: only a run's fit() turns it on


def test_lean_adam_takes_the_kernel_step_only_where_it_fits(kernel):
    """step_bf16 steps the weights, counts the step, and keeps torch.optim's state; it declines a
    weight's first step (no state yet) and gradients laid out otherwise than their weights."""
    weights = [torch.nn.Parameter(torch.randn(8, 4)), torch.nn.Parameter(torch.randn(8))]
    opt = LeanAdam(weights, lr=1e-2, betas=(0.5, 0.999), fused=True)
    grads = [torch.randn(8, 4).bfloat16(), torch.randn(8).bfloat16()]
    copies = [torch.empty(8, 4, dtype=torch.bfloat16), torch.empty(8, dtype=torch.bfloat16)]
    assert not opt.step_bf16(weights, grads, copies, kernel, 1)  # the first step makes the state
    for p, g in zip(weights, grads):
        p.grad = g.float()
    opt.step()
    before = [p.detach().clone() for p in weights]
    assert opt.step_bf16(weights, grads, copies, kernel, 1)
    assert all(not torch.equal(a, b) for a, b in zip(before, weights))
    assert [float(opt.state[p]["step"]) for p in weights] == [2.0, 2.0]
    assert all(torch.equal(c, p.detach().bfloat16()) for c, p in zip(copies, weights))
    transposed = [grads[0].t().contiguous().t(), grads[1]]  # the same values, column-major
    assert not opt.step_bf16(weights, transposed, copies, kernel, 1)
    assert [float(opt.state[p]["step"]) for p in weights] == [2.0, 2.0]  # declined: nothing counted


def test_a_running_profiler_sees_the_kernel_step(kernel):
    """A profiled run steps through the kernel as an unprofiled one does (so its profile shows the
    run's own step), recorded under torch.optim's name for the step."""
    runs = []
    for profiled in (False, True):
        torch.manual_seed(0)
        weights = [torch.nn.Parameter(torch.randn(8, 4))]
        opt = LeanAdam(weights, lr=1e-2, fused=True)
        weights[0].grad = torch.randn(8, 4)
        opt.step()  # the first step makes the state
        grads, copies = [torch.randn(8, 4).bfloat16()], [torch.empty(8, 4, dtype=torch.bfloat16)]
        profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        with profiler if profiled else contextlib.nullcontext():
            assert opt.step_bf16(weights, grads, copies, kernel, 1)
        state = opt.state[weights[0]]
        runs.append((weights[0].detach(), copies[0], state["exp_avg_sq"], float(state["step"])))
    assert "Optimizer.step#LeanAdam.step" in {event.name for event in profiler.events()}
    (weight, copy, avg_sq, step), (weight_p, copy_p, avg_sq_p, step_p) = runs
    assert torch.equal(weight, weight_p) and torch.equal(copy, copy_p) and torch.equal(avg_sq, avg_sq_p)
    assert step == step_p == 2.0


def test_buffers_the_kernel_filled_are_refilled_once_their_weights_change_otherwise(kernel, monkeypatch):
    """After a kernel step the bfloat16 buffers hold the new weights and the next forward uses them
    without a copy; a checkpoint load (or any in-place write) afterwards makes them stale."""
    layer = torch.nn.Linear(6, 3)
    copies = _NetworkCopies([layer.weight, layer.bias])
    opt = LeanAdam([layer.weight, layer.bias], lr=1e-2, fused=True)

    def backward_and_step():
        opt.zero_grad(set_to_none=True)  # as a training step does
        copies.use_low()
        layer(torch.randn(5, 6).bfloat16()).float().sum().backward()
        copies.use_full()
        copies.step(opt, kernel)

    backward_and_step()  # the first step: through PyTorch (it makes the state)
    backward_and_step()  # through the kernel
    assert all(at is not None for at in copies.filled_at)
    batched_copies = []
    real_copy = torch._foreach_copy_
    monkeypatch.setattr(torch, "_foreach_copy_", lambda *a, **k: batched_copies.append(1) or real_copy(*a, **k))
    copies.use_low()
    assert batched_copies == []  # the kernel's buffers, used as they are
    assert torch.equal(layer.weight, copies.full[0].bfloat16()) and torch.equal(layer.bias, copies.full[1].bfloat16())
    copies.use_full()
    other = torch.nn.Linear(6, 3).state_dict()
    layer.load_state_dict(other)
    copies.use_low()
    assert batched_copies == [1]
    assert torch.equal(layer.weight, other["weight"].bfloat16()) and torch.equal(layer.bias, other["bias"].bfloat16())
    copies.use_full()


def image_run(sets, steps=8, preset="mnist-mlp"):
    """A small GAN on random 28x28 images in bfloat16: the networks' weights take the buffers."""
    from gankit.presets import load_preset

    images = ImageSource(np.random.default_rng(0).integers(0, 256, (64, 1, 28, 28), dtype=np.uint8), None, "noise")
    cfg = config.with_overrides(load_preset(preset), [
        "train.precision=bf16", "train.batch_size=16", "train.log_every=4", "train.snapshot_every=0",
        "train.checkpoint_every=4", "train.drs_steps=0", "eval.every=0", "model.g_hidden=[32, 64]",
        "model.d_hidden=[64, 32]", f"train.steps={steps}", *sets])
    return cfg, images


DCGAN = ["model.name=dcgan", "model.conv_width=4", "model.z_dim=8", "model.d_batch_norm=true", "model.g_output=tanh"]


@pytest.mark.parametrize("schedule, sets", [("alternating", []), ("shared", []), ("simultaneous", []),
                                            ("shared", DCGAN), ("alternating", ["train.n_d=2"])],
                         ids=["alternating", "shared", "simultaneous", "dcgan", "two-d-updates"])
def test_bf16_runs_step_through_the_kernel_and_resume_bit_for_bit(kernel, tmp_path, schedule, sets, monkeypatch):
    """An image run in bfloat16 on a CPU steps through the kernel (after each weight's first step;
    the DCGAN's channels-last convolutions too, its batch norms through PyTorch), trains as
    PyTorch's Adam does to rounding, and resumes from a checkpoint bit for bit."""
    calls = []
    original = adam_kernel.AdamKernel.step
    monkeypatch.setattr(adam_kernel.AdamKernel, "step", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    cfg, images = image_run([f"train.schedule={schedule}", *sets])
    straight = Trainer(cfg, tmp_path / "straight", source=images).fit(progress=False)
    d_updates = 2 if "train.n_d=2" in sets else 1
    assert straight.precision.kernel is kernel and len(calls) == (1 + d_updates) * 8 - 2  # each net's first step: PyTorch
    torch_cfg = config.with_overrides(cfg, ["train.adam_kernel=torch"])
    plain = Trainer(torch_cfg, tmp_path / "torch", source=images).fit(progress=False)
    assert plain.precision.kernel is None and len(calls) == (1 + d_updates) * 8 - 2
    for a, b in zip(straight.g.state_dict().values(), plain.g.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    Trainer(cfg, tmp_path / "halves", source=images).fit(steps=4, progress=False)
    state = ckpt.load_checkpoint(ckpt.find_checkpoint(tmp_path / "halves"))
    resumed = Trainer(cfg, tmp_path / "halves", source=images, saved_precision=state["precision"])
    resumed.load_state_dict(state)
    resumed.fit(progress=False)
    for part in ("g", "d"):
        for key, value in getattr(straight, part).state_dict().items():
            assert torch.equal(value, getattr(resumed, part).state_dict()[key]), (part, key)


def test_without_a_compiler_runs_use_pytorchs_adam_and_say_why(tmp_path, monkeypatch, fresh_load):
    monkeypatch.setattr(adam_kernel, "find_compiler", lambda: None)
    found = adam_kernel.load()
    assert isinstance(found, adam_kernel.Unavailable) and "no C compiler" in found.reason
    cfg, images = image_run([])
    trainer = Trainer(cfg, tmp_path / "run", source=images).fit(progress=False)
    assert trainer.precision.kernel is None
    events = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open() if "adam_kernel" in line]
    assert len(events) == 1 and "no C compiler found" in events[0]["message"]
    assert all(torch.isfinite(p).all() for p in trainer.g.parameters())


def test_a_failing_compiler_is_reported_and_a_damaged_library_rebuilt(tmp_path, monkeypatch, fresh_load):
    """A compiler that fails gives its first line of complaint, not an exception; a damaged library
    in the cache is replaced by a new build at the next load."""
    if adam_kernel.find_compiler() is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))  # a library this process never loaded
    failing = tmp_path / "cc"
    failing.write_text("#!/bin/sh\necho 'cc: error: no such option' >&2\nexit 1\n")
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    found = adam_kernel.load()
    assert isinstance(found, adam_kernel.Unavailable) and "no such option" in found.reason
    monkeypatch.delenv("CC")
    adam_kernel.load.cache_clear()
    compiler = adam_kernel.find_compiler()
    path = adam_kernel.library_path(compiler, adam_kernel.compiler_target(compiler))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a library")
    assert isinstance(adam_kernel.load(), adam_kernel.Unavailable) and not path.exists()  # deleted: built next time
    adam_kernel.load.cache_clear()
    rebuilt = adam_kernel.load()
    assert isinstance(rebuilt, adam_kernel.AdamKernel) and rebuilt.path == path and path.stat().st_size > 1000


def test_a_kernel_that_disagrees_with_torch_is_not_used_and_not_kept(tmp_path, monkeypatch, fresh_load):
    if adam_kernel.find_compiler() is None:
        pytest.skip("no C compiler on this machine")
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(adam_kernel, "agrees_with_torch", lambda kernel: False)
    found = adam_kernel.load()
    assert isinstance(found, adam_kernel.Unavailable) and "differ" in found.reason
    assert list((tmp_path / "cache" / adam_kernel.KERNELS).iterdir()) == []


def test_a_cache_folder_that_cannot_be_written_still_gives_the_kernel(tmp_path, monkeypatch, fresh_load):
    if adam_kernel.find_compiler() is None:
        pytest.skip("no C compiler on this machine")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder would be")
    monkeypatch.setenv("GANKIT_CACHE", str(blocker / "cache"))
    found = adam_kernel.load()
    assert isinstance(found, adam_kernel.AdamKernel), found
