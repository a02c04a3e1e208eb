"""Optimisers for G and D, built from their config sections."""
from __future__ import annotations

from typing import Any

import torch

from gankit.config import OptimConfig


def make_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    """Adam: the fused kernel (one pass over the weights instead of one per arithmetic step: 6x faster
    than foreach on a CPU for the MLP GAN's 2 million weights, where foreach took half of a step),
    where this PyTorch has it for the device. Others: foreach (PyTorch only picks it by default on CUDA)."""
    if cfg.name == "adam":
        params = list(params)
        settings = {"lr": cfg.lr, "betas": (cfg.beta1, cfg.beta2), "eps": cfg.eps}
        try:
            return torch.optim.Adam(params, fused=True, **settings)
        except RuntimeError:  # no fused kernel for this device in this PyTorch (CPU: 2.4 and later)
            return torch.optim.Adam(params, foreach=True, **settings)
    if cfg.name == "rmsprop":
        opt = torch.optim.RMSprop(params, lr=cfg.lr, alpha=cfg.alpha, eps=cfg.eps, momentum=cfg.momentum,
                                  foreach=True)
        if cfg.rms_init > 0:
            _start_rms_average(opt, cfg.rms_init)
        return opt
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, foreach=True)


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
