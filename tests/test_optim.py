"""The optimisers: LeanAdam's direct step against torch.optim.Adam's, bit for bit."""
import copy

import pytest
import torch

from gankit.config import OptimConfig
from gankit.training.optim import LeanAdam, load_optimizer_state, make_optimizer

SHAPES = [(16, 8), (16,), (3, 16), (3,)]


def weights(seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in SHAPES]


def set_gradients(params, step: int, skip: int | None = None) -> None:
    gen = torch.Generator().manual_seed(100 + step)
    for i, p in enumerate(params):
        p.grad = None if i == skip else torch.randn(p.shape, generator=gen)


def step_both(pairs, step: int, skip: int | None = None) -> None:
    """The same gradients for each (optimiser, its weights) pair, then each optimiser's step."""
    for opt, params in pairs:
        set_gradients(params, step, skip)
        opt.step()


@pytest.fixture
def general_steps(monkeypatch):
    """Counts the steps LeanAdam hands to torch.optim.Adam's own step (its general path)."""
    general = []
    original = torch.optim.Adam.step

    def counted(self, *args, **kwargs):
        if isinstance(self, LeanAdam):
            general.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counted)
    return general


def two_groups(params) -> list[dict]:
    """Two parameter groups, the second with its own rate and betas."""
    return [{"params": params[:2]}, {"params": params[2:], "lr": 5e-3, "betas": (0.9, 0.99)}]


@pytest.mark.parametrize("settings", [{}, {"weight_decay": 0.01}], ids=["plain", "weight-decay"])
def test_lean_adam_steps_like_torch_fused_adam_bit_for_bit(settings, general_steps):
    ours, theirs = weights(), weights()
    settings = {"lr": 1e-2, "betas": (0.5, 0.95), "eps": 1e-3, "fused": True, **settings}
    lean = LeanAdam(two_groups(ours), **settings)
    torch_adam = torch.optim.Adam(two_groups(theirs), **settings)
    for step in range(6):
        if step == 3:  # a schedule or a rollback changes the rate between steps
            for opt in (lean, torch_adam):
                opt.param_groups[0]["lr"] = 3e-3
        step_both([(lean, ours), (torch_adam, theirs)], step)
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    assert len(general_steps) == 1  # the first step made the state; the five after it were direct
    for a, b in zip(ours, theirs):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(lean.state[a][key], torch_adam.state[b][key]), key


def test_lean_adam_skips_a_weight_without_gradient_as_torch_does(general_steps):
    ours, theirs = weights(), weights()
    lean = LeanAdam(ours, lr=1e-2, fused=True)
    torch_adam = torch.optim.Adam(theirs, lr=1e-2, fused=True)
    for step in range(4):
        step_both([(lean, ours), (torch_adam, theirs)], step, skip=1 if step >= 2 else None)
    assert len(general_steps) == 1  # the first step only: a missing gradient stays on the direct path
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)
        assert torch.equal(lean.state[a]["step"], torch_adam.state[b]["step"])  # the skipped weight's too


def test_lean_adam_goes_on_exactly_after_loading_a_state(general_steps):
    """Saved after two steps, loaded (as a resume does) into an optimiser that had stepped on its
    own, it goes on as torch.optim.Adam resumed the same way, on the loaded state."""
    first = weights()
    lean = LeanAdam(first, lr=1e-2, fused=True)
    step_both([(lean, first)], 0)
    step_both([(lean, first)], 1)
    saved = copy.deepcopy(lean.state_dict())
    ours, theirs = weights(1), weights(1)
    resumed = LeanAdam(ours, lr=1e-2, fused=True)
    torch_resumed = torch.optim.Adam(theirs, lr=1e-2, fused=True)
    step_both([(resumed, ours), (torch_resumed, theirs)], 7)  # state of their own, then replaced
    with torch.no_grad():
        for a, b, c in zip(ours, theirs, first):
            a.copy_(c)
            b.copy_(c)
    load_optimizer_state(resumed, copy.deepcopy(saved))
    load_optimizer_state(torch_resumed, copy.deepcopy(saved))
    general_steps.clear()
    for step in range(2, 4):
        step_both([(resumed, ours), (torch_resumed, theirs), (lean, first)], step)
    assert general_steps == []  # every step after the load was direct
    for a, b, c in zip(ours, theirs, first):
        assert torch.equal(a, b) and torch.equal(a, c)
        assert torch.equal(resumed.state[a]["exp_avg_sq"], torch_resumed.state[b]["exp_avg_sq"])


def test_a_copy_of_lean_adam_steps_like_the_original(general_steps):
    ours = weights()
    lean = LeanAdam(ours, lr=1e-2, fused=True)
    step_both([(lean, ours)], 0)
    twin = copy.deepcopy(lean)  # its own copies of the weights and state
    theirs = twin.param_groups[0]["params"]
    step_both([(lean, ours), (twin, theirs)], 1)
    assert general_steps == [1]  # the first step only: the copy stepped directly
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_a_running_profiler_sees_the_step_lean_adam_takes(general_steps, monkeypatch):
    """Under a profiler the direct step still runs (a profile shows the run's own step): the fused
    kernel inside a record under torch.optim's name for the step, with the call the profiler's
    tracer reads the optimiser's state from, and the numbers of an unprofiled step."""
    params, twin = weights(), weights()
    lean, lean_twin = LeanAdam(params, lr=1e-2, fused=True), LeanAdam(twin, lr=1e-2, fused=True)
    step_both([(lean, params), (lean_twin, twin)], 0)
    general_steps.clear()
    state_reads = []
    monkeypatch.setattr(lean, "_optimizer_step_code", lambda: state_reads.append(1))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        step_both([(lean, params)], 1)
    step_both([(lean_twin, twin)], 1)
    assert general_steps == [] and state_reads == [1]
    record = next(e for e in prof.events() if e.name == "Optimizer.step#LeanAdam.step")
    kernel = next(e for e in prof.events() if e.name == "aten::_fused_adam_")
    assert record.time_range.start <= kernel.time_range.start and kernel.time_range.end <= record.time_range.end
    assert all(torch.equal(a, b) for a, b in zip(params, twin))


def test_lean_adam_keeps_torch_optim_hooks():
    params = weights()
    lean = LeanAdam(params, lr=1e-2, fused=True)
    seen = []
    lean.register_step_post_hook(lambda opt, args, kwargs: seen.append(1))
    for step in range(3):
        step_both([(lean, params)], step)
    assert seen == [1, 1, 1]


def test_adam_config_makes_a_lean_fused_adam():
    opt = make_optimizer(weights(), OptimConfig(name="adam", lr=2e-4, beta1=0.5))
    assert isinstance(opt, LeanAdam) and opt.param_groups[0]["fused"]
