"""PyTorch's CPU settings for a training run: its thread count and whether denormal floats are flushed.

Denormals (floats below 1.2e-38) take a slow microcode path on x86. A GAN's Adam state fills with
them: beta1 = 0.5 halves a first moment whose gradient stays 0 (a dead ReLU unit), so within ~120
steps it is denormal. The MLP GAN at batch 64 then trained at 5,900 images/s instead of 7,350.
TensorFlow flushes them in its own threads by default; PyTorch leaves them on.

The flush mode is a register of each CPU thread, and `torch.set_flush_denormal` sets the calling
thread's only, while the matrix products and Adam run on OpenMP worker threads too. So the mode is
set inside an OpenMP parallel region, once on each thread of PyTorch's pool.
"""
from __future__ import annotations

import ctypes
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch


def default_threads(is_image: bool) -> int:
    """train.threads = 0: one thread for vector data (its small networks gain nothing from more, and a
    run beside another keeps its speed: two runs of 1,000 quadratic steps at once on 2 cores took
    32 s each with 2 threads, 2.4 s with one; docs/benchmarks.md); image networks keep PyTorch's own
    count (the cores, or OMP_NUM_THREADS when set; torchrun sets it to 1 for several processes)."""
    return torch.get_num_threads() if is_image else 1


@contextmanager
def torch_cpu_settings(threads: int, flush_denormals: bool) -> Iterator[None]:
    """PyTorch's CPU thread count and denormal mode (train.flush_denormals) for the block, then back
    to what they were (a notebook keeps its own). PyTorch cannot read the denormal mode back; it is
    off in every new process, so off is what the block restores."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    set_flush_denormal_on_every_thread(flush_denormals, threads)
    try:
        yield
    finally:
        set_flush_denormal_on_every_thread(False, threads)
        torch.set_num_threads(before)


_PER_THREAD = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def set_flush_denormal_on_every_thread(on: bool, threads: int) -> bool:
    """torch.set_flush_denormal(on) on the calling thread and on each of `threads` OpenMP threads.
    GOMP_parallel (GNU OpenMP's entry point, which LLVM's and Intel's runtimes also provide) runs
    the callback once on each thread of the pool PyTorch uses. Where no OpenMP runtime is found,
    only the calling thread changes. Returns whether the worker threads were reached."""
    torch.set_flush_denormal(on)
    gomp = _openmp_runtime()
    if threads <= 1:
        return True
    if gomp is None:
        return False
    callback = _PER_THREAD(lambda _: torch.set_flush_denormal(on))  # kept referenced through the call
    gomp.GOMP_parallel(callback, None, ctypes.c_uint(threads), ctypes.c_uint(0))
    return True


def _openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime PyTorch loaded, found by its path in this process's memory map (Linux): opening
    that path again gives the loaded copy, where a bare name could load another runtime with its own pool."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return None
    paths = {line.split()[-1] for line in maps.splitlines() if line.count(" /") == 1}
    for path in sorted(paths):
        if Path(path).name.startswith(("libgomp", "libiomp5", "libomp")):
            runtime = ctypes.CDLL(path)
            if hasattr(runtime, "GOMP_parallel"):
                return runtime
    return None
