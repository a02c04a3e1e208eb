"""Data-parallel training over several processes started by torchrun.

Each process draws its share of the batch with its own random streams; after every backward the
gradients of the network about to step are averaged over the processes, so every process takes
the same optimiser step and the networks stay identical. Process 0 writes the run directory.

Why not DistributedDataParallel: DDP's reducer expects one forward and one backward of a module
per update, while a GAN step runs D inside G's backward, and R1 and the WGAN gradient penalty call
torch.autograd.grad(create_graph=True), which DDP does not support (wrong gradients,
pytorch/pytorch#47562). One all_reduce of the flattened gradients per update, over
torch.distributed (NCCL on GPUs, Gloo on CPUs), is exact in all of these cases.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.distributed as dist

from gankit.errors import UserError


@dataclass(frozen=True)
class World:
    """Where this process stands: its rank among `size` processes, and its rank on this machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1


def world() -> World:
    """The process group this process belongs to (set up by `start`), or a world of one."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device_name: str) -> World:
    """Join the process group torchrun described in the environment. On GPUs each process takes the
    GPU of its local rank; `device_name` 'cpu' (or no GPU) uses Gloo."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device_name != "cpu" and torch.cuda.is_available()
    if use_cuda:
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"process {local_rank} on this machine has no GPU of its own "
                            f"({torch.cuda.device_count()} visible); start at most that many with torchrun")
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return world()


def stop() -> None:
    """Leave the process group once every process is done with it: tearing Gloo down while another
    process still writes can abort the process (seen as 'terminate called without an active exception')."""
    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        dist.barrier()
    except RuntimeError:
        pass  # another process has already failed; torchrun reports it
    dist.destroy_process_group()


def average_gradients(params: Iterable[torch.nn.Parameter], size: int) -> None:
    """Replace each gradient by its mean over the processes: one collective for all of them."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= size
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()


def mean_over_processes(stats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The logged numbers as means over the processes (one collective), so every process sees the
    same values and takes the same decisions (rollback, health warnings)."""
    keys = sorted(stats)
    flat = torch.stack([stats[k].detach().float().reshape(()) for k in keys])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    return {k: flat[i] for i, k in enumerate(keys)}


def any_process(flag: bool, device: torch.device) -> bool:
    """True on every process when `flag` is true on any (a stop signal reaches them at different steps)."""
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def from_main(value: Any) -> Any:
    """Process 0's `value` on every process (a run directory name with the time in it, say)."""
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(value: Any) -> list[Any] | None:
    """Every process's `value`, in rank order, on process 0 (None elsewhere)."""
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(value, out, dst=0)
    return out


def max_difference(module: torch.nn.Module, device: torch.device) -> float:
    """How far this module's weights are apart across processes (0.0 when in sync)."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in module.parameters()]).to(device)
    low, high = flat.clone(), flat.clone()
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    return float((high - low).abs().max())
