"""Optimisers for G and D, built from their config sections."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, NamedTuple

import torch

from gankit.config import OptimConfig
from gankit.training import adam_kernel


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam: the fused kernel (one pass over the weights instead of one per arithmetic step: 6x faster
    than foreach on a CPU for the MLP GAN's 2 million weights, where foreach took half of a step),
    where this PyTorch has it for the device. Others: foreach (PyTorch only picks it by default on CUDA)."""
    if cfg.name == "adam":
        params = list(params)
        settings = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps}
        try:
            return LeanAdam(params, fused=True, **settings)
        except RuntimeError:  # no fused kernel for this device in this PyTorch (CPU: 2.4 and later)
            return torch.optim.Adam(params, foreach=True, **settings)
    if cfg.name == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum,
                                  foreach=True)
        if cfg.rms_init > 0:
            _start_rms_average(opt, cfg.rms_init)
        return opt
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, foreach=True)


class LeanAdam(torch.optim.Adam):
    """torch.optim.Adam with the fused kernel, whose step calls that kernel directly when nothing
    needs torch.optim's general path: the same kernel with the same arguments, so the same numbers
    and the same state and state_dict (bit for bit on a CPU: tests/test_optim.py). torch.optim's
    step spends about 0.13 ms of Python around the kernel (hooks, a profiler record, grouping the
    tensors by device and type): with G's and D's steps, 3% of the MLP GAN's step at batch 64 on a
    CPU (docs/benchmarks.md). Weights without a gradient are skipped, as torch.optim skips them.
    Anything unusual takes torch.optim's own step: a closure, optimiser hooks, a weight without
    state, AMSGrad, maximize, capturable, a tensor learning rate, a gradient scaler's attributes,
    mixed devices or types. A running profiler does not: it sees the step gankit takes, under the
    name torch.optim's step records (`Optimizer.step#LeanAdam.step`), so that a profile of a run
    shows the run's own kernels.

    `step_bf16` steps float32 weights from bfloat16 gradients through gankit's compiled kernel
    (training/adam_kernel.py), which also writes the weights' bfloat16 copies."""

    @torch.no_grad()
    def step(self, closure=None):
        self._accelerator_graph_capture_health_check()  # refuses a CUDA graph capture it cannot take
        groups = None if closure is not None or self._needs_general_step() else self._direct_groups()
        if groups is None:
            return self._general_step(closure)
        with self._step_record():
            for group, (params, grads, exp_avgs, exp_avg_sqs, steps) in zip(self.param_groups, groups):
                if not params:
                    continue
                beta1, beta2 = group["betas"]
                torch._foreach_add_(steps, 1)
                torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, amsgrad=False,
                                   lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=group["weight_decay"],
                                   eps=group["eps"], maximize=False, grad_scale=None, found_inf=None)
        return None

    # torch.optim wraps each subclass's step in its hook-and-profiler wrapper unless marked: the
    # direct path makes only the profiler's part of it (`_step_record`), the general path below
    # puts the whole wrapper back
    step.hooked = True

    def _general_step(self, closure):
        """Adam's own step inside torch.optim's wrapper (hooks, profiler record), wrapped once: Adam.step
        itself is wrapped only once a plain Adam has been made in this process."""
        adam_step = torch.optim.Adam.step
        if getattr(adam_step, "hooked", False):
            adam_step = adam_step.__wrapped__
        return torch.optim.Optimizer.profile_hook_step(adam_step)(self, closure)

    def _needs_general_step(self) -> bool:
        from torch.optim import optimizer as base
        hooks = (self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                 or base._global_optimizer_pre_hooks or base._global_optimizer_post_hooks)
        scaled = getattr(self, "grad_scale", None) is not None or getattr(self, "found_inf", None) is not None
        return bool(hooks) or scaled

    @contextlib.contextmanager
    def _step_record(self) -> Iterator[None]:
        """Where a profiler runs, what torch.optim's own step gives it around a direct step: a record
        under the step's name, and the call its Python tracer reads the optimiser's state from (a
        memory timeline's OPTIMIZER_STATE). Without a profiler nothing: a record costs microseconds."""
        if not torch.autograd._profiler_enabled():
            yield
            return
        with torch.profiler.record_function(f"Optimizer.step#{type(self).__name__}.step"):
            yield
            self._optimizer_step_code()

    def _direct_groups(self) -> list[tuple[list, ...]] | None:
        """Each group's weights that have gradients, with their gradients, moments and step counts,
        read afresh each step (a few microseconds; state replaced by a load is then never missed),
        or None when any group needs the general path."""
        groups = []
        for group in self.param_groups:
            if not self._plain(group):
                return None
            params = [p for p in group["params"] if p.grad is not None]
            found = self._states(params)
            if found is None or any(p.grad.is_sparse for p in params):
                return None
            if params and (len({(p.device, p.dtype) for p in params}) > 1 or params[0].is_complex()):
                return None
            groups.append((params, [p.grad for p in params], *found))
        return groups

    @staticmethod
    def _plain(group: dict) -> bool:
        """A group the fused kernel steps as torch.optim would."""
        return (group["fused"] and not group["amsgrad"] and not group["maximize"] and not group["capturable"]
                and not group["differentiable"] and not group.get("decoupled_weight_decay", False)
                and not isinstance(group["lr"], torch.Tensor))

    def _states(self, params: list) -> tuple[list, list, list] | None:
        """The moments and step counts of these weights, or None if any has no state yet (its first
        step: torch.optim's own step makes the state)."""
        states = [self.state.get(p) for p in params]
        if any(not s for s in states):
            return None
        return [s["exp_avg"] for s in states], [s["exp_avg_sq"] for s in states], [s["step"] for s in states]

    @torch.no_grad()
    def step_bf16(self, params: list[torch.nn.Parameter], grads: list[torch.Tensor], copies: list[torch.Tensor],
                  kernel, threads: int) -> bool:
        """Adam's step for float32 `params` from their bfloat16 `grads`, through gankit's compiled
        `kernel`, which also writes each weight's bfloat16 copy into `copies`. The same state and
        state_dict as `step`. Returns False, having done nothing, where the kernel cannot take the
        step (general-path settings, a weight's first step, other types or layouts): the caller
        then hands the gradients to `step` in float32."""
        if not params or self._needs_general_step():
            return False
        plan = self._bf16_plan(params, copies)
        if plan is None or not adam_kernel.gradients_fit(params, grads):
            return False
        with self._step_record():
            for part in plan:
                group = part.group
                beta1, beta2 = group["betas"]
                kernel.step(part.weights, [grads[i] for i in part.picked], part.exp_avgs, part.exp_avg_sqs,
                            part.copies, [int(s) + 1 for s in part.steps], lr=group["lr"], beta1=beta1,
                            beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"], threads=threads)
                torch._foreach_add_(part.steps, 1)  # counted once done, as torch.optim counts
                # the kernel wrote through pointers: tell autograd, so that a graph still holding the
                # weights or their bfloat16 copies refuses a backward pass instead of using the new values
                torch.autograd.graph.increment_version([*part.weights, *part.copies])
        return True

    def _bf16_plan(self, params: list, copies: list) -> list[_KernelPart] | None:
        """`params` split by group with their state and copies, checked once and kept while the
        weights' memory, their state tensors and their groups' settings stay as they were (a load
        replaces the state; a rollback may change a rate, which is read at each step)."""
        plans = self.__dict__.setdefault("_bf16_plans", {})
        key = (tuple(map(id, params)), tuple(map(id, copies)))
        plan = plans.get(key)
        if plan is not None and all(part.still_valid(self) for part in plan):
            return plan
        plans.pop(key, None)
        group_of = {id(p): group for group in self.param_groups for p in group["params"]}
        if any(id(p) not in group_of for p in params):
            return None
        found = self._states(params)
        groups = {id(group_of[id(p)]): group_of[id(p)] for p in params}
        if found is None or not all(self._plain(g) for g in groups.values()) or not adam_kernel.state_fits(
                params, *found[:2], copies):
            return None
        plan = []
        for group in groups.values():
            picked = [i for i, p in enumerate(params) if group_of[id(p)] is group]
            plan.append(_KernelPart(group, picked, [params[i] for i in picked], [params[i].detach() for i in picked],
                                    *([found[k][i] for i in picked] for k in range(3)), [copies[i] for i in picked]))
        plans[key] = plan
        return plan


class _KernelPart(NamedTuple):
    """One parameter group's share of a kernel step: the weights (`picked`: their places in the
    caller's lists), views of their float32 memory, their state tensors and bfloat16 copies."""
    group: dict
    picked: list[int]
    params: list[torch.nn.Parameter]
    weights: list[torch.Tensor]
    exp_avgs: list[torch.Tensor]
    exp_avg_sqs: list[torch.Tensor]
    steps: list[torch.Tensor]
    copies: list[torch.Tensor]

    def still_valid(self, opt: LeanAdam) -> bool:
        if not opt._plain(self.group):
            return False
        for p, weight, avg, avg_sq, step in zip(self.params, self.weights, self.exp_avgs, self.exp_avg_sqs, self.steps):
            state = opt.state.get(p)
            if (not state or state.get("exp_avg") is not avg or state.get("exp_avg_sq") is not avg_sq
                    or state.get("step") is not step or p.data_ptr() != weight.data_ptr()
                    or p.stride() != weight.stride()):
                return False
        return True


def _start_rms_average(opt: torch.optim.RMSprop, value: float) -> None:
    """Start RMSProp's squared-gradient average at `value` instead of 0, as TensorFlow 1 does:
    early updates are then small instead of lr-sized. PyTorch keeps state it finds already set."""
    for group in opt.param_groups:
        for p in group["params"]:
            state = {"step": torch.tensor(0.0), "square_avg": torch.full_like(p, value)}
            if group["momentum"] > 0:
                state["momentum_buffer"] = torch.zeros_like(p)
            if group["centered"]:
                state["grad_avg"] = torch.zeros_like(p)
            opt.state[p] = state


def load_optimizer_state(opt: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load a saved optimiser state, keeping the implementation this run chose (fused or foreach: a
    run saved by another version or machine may have used the other) and every state tensor laid
    out like its weight: CPU fused Adam assumes it (with contiguous moments beside channels-last
    weights, as an earlier version saved them, it silently updates the wrong elements)."""
    chosen = [{k: g.get(k) for k in ("fused", "foreach")} for g in opt.param_groups]
    opt.load_state_dict(saved)
    for group, flags in zip(opt.param_groups, chosen):
        group.update(flags)
        for p in group["params"]:
            for key, value in opt.state.get(p, {}).items():
                if torch.is_tensor(value) and value.shape == p.shape:
                    opt.state[p][key] = torch.empty_like(p).copy_(value)
                elif key == "step" and torch.is_tensor(value) and flags.get("fused"):
                    opt.state[p][key] = value.to(device=p.device, dtype=torch.float32)
