"""The optimisers: LeanAdam's direct step against torch.optim.Adam's, bit for bit."""
import copy

import pytest
import torch

from gankit.config import OptimConfig
from gankit.training.optim import LeanAdam, make_optimizer

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
def direct_steps(monkeypatch):
    """Counts the steps LeanAdam hands to torch.optim.Adam's own step (its general path)."""
    general = []
    original = torch.optim.Adam.step

    def counted(self, *args, **kwargs):
        if isinstance(self, LeanAdam):
            general.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", counted)
    return general


@pytest.mark.parametrize("settings", [{}, {"weight_decay": 0.01}], ids=["plain", "weight-decay"])
def test_lean_adam_steps_like_torch_fused_adam_bit_for_bit(settings, direct_steps):
    ours, theirs = weights(), weights()
    lean = LeanAdam(ours, lr=1e-2, betas=(0.5, 0.999), fused=True, **settings)
    torch_adam = torch.optim.Adam(theirs, lr=1e-2, betas=(0.5, 0.999), fused=True, **settings)
    for step in range(6):
        if step == 3:  # a schedule or a rollback changes the rate between steps
            for opt in (lean, torch_adam):
                opt.param_groups[0]["lr"] = 3e-3
        step_both([(lean, ours), (torch_adam, theirs)], step)
        for a, b in zip(ours, theirs):
            assert torch.equal(a, b)
    assert len(direct_steps) == 1  # the first step made the state; the five after it were direct
    for a, b in zip(ours, theirs):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(lean.state[a][key], torch_adam.state[b][key]), key


def test_lean_adam_takes_the_general_path_for_a_weight_without_gradient(direct_steps):
    ours, theirs = weights(), weights()
    lean = LeanAdam(ours, lr=1e-2, fused=True)
    torch_adam = torch.optim.Adam(theirs, lr=1e-2, fused=True)
    for step in range(3):
        step_both([(lean, ours), (torch_adam, theirs)], step, skip=1 if step == 2 else None)
    assert len(direct_steps) == 2  # the first step and the one with a missing gradient
    for a, b in zip(ours, theirs):
        assert torch.equal(a, b)


def test_lean_adam_goes_on_exactly_after_loading_a_state(direct_steps):
    first, params = weights(), weights()
    lean = LeanAdam(first, lr=1e-2, fused=True)
    for step in range(2):
        step_both([(lean, first)], step)
    saved = copy.deepcopy(lean.state_dict())
    resumed = LeanAdam(params, lr=1e-2, fused=True)
    with torch.no_grad():
        for p, q in zip(params, first):
            p.copy_(q)
    resumed.load_state_dict(saved)
    for step in range(2, 4):
        step_both([(lean, first), (resumed, params)], step)
    for a, b in zip(first, params):
        assert torch.equal(a, b)
        assert torch.equal(lean.state[a]["exp_avg_sq"], resumed.state[b]["exp_avg_sq"])


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
