"""PyTorch's CPU settings for a training run: its thread count, whether denormal floats are flushed,
and whether memory a step frees is kept for the next step.

Denormals (floats below 1.2e-38) take a slow microcode path on x86. A GAN's Adam state fills with
them: beta1 = 0.5 halves a first moment whose gradient stays 0 (a dead ReLU unit), so within ~120
steps it is denormal. The MLP GAN at batch 64 then trained at 5,900-6,200 images/s instead of 7,560-7,690.
TensorFlow flushes them in its own threads by default; PyTorch leaves them on.

The flush mode is a register of each CPU thread, and `torch.set_flush_denormal` sets the calling
thread's only, while the matrix products and Adam run on OpenMP worker threads too. So the mode is
set inside an OpenMP parallel region, once on each thread of PyTorch's pool.

PyTorch's CPU tensors come from the C library's malloc. glibc's malloc hands memory back to the
kernel once more than its trim threshold lies free at the top of its heap, and serves blocks above
its mmap threshold from fresh mappings; both thresholds adapt only partly to a training step,
which frees and allocates the same activations every step. Each step then touched thousands of
fresh pages, each a page fault the kernel must zero: the step benchmark's DCGAN at batch 64 took
about 4,000 faults and 6-9 ms of kernel time a step (of about 100 ms), `mnist-dcgan` 100-450
faults and 1-2 ms. `keep_freed_memory` raises both thresholds (docs/benchmarks.md).
"""
from __future__ import annotations

import ctypes
import os
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
def torch_cpu_settings(threads: int, flush_denormals: bool, device_type: str = "cpu") -> Iterator[bool]:
    """PyTorch's CPU thread count and, with flush_denormals on a CPU run (a GPU computes its own way),
    the denormal mode for the block, then back to what they were (a notebook keeps its own). PyTorch
    cannot read the denormal mode back; it is off in every new process, so off is what the block
    restores. On a CPU, memory freed by a step is kept for the next (`keep_freed_memory`; not undone
    after the block). Yields whether denormals are flushed on every thread of the pool (False where
    flushing was asked but did not reach them)."""
    if device_type == "cpu":
        keep_freed_memory()
    flush_denormals = flush_denormals and device_type == "cpu"
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    flushed = flush_denormals and set_flush_denormal_on_every_thread(True, threads)
    try:
        yield flushed or not flush_denormals
    finally:
        if flush_denormals:
            set_flush_denormal_on_every_thread(False, threads)
        torch.set_num_threads(before)


# glibc's mallopt parameters, and the largest mmap threshold it accepts (4 MiB times the size of a
# C long: 32 MiB on 64-bit systems, 512 KiB on 32-bit ones)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD_MAX = 32 << 20 if ctypes.sizeof(ctypes.c_long) == 8 else 512 << 10
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """glibc's malloc set to keep freed memory for reuse: blocks up to 32 MiB (64-bit) come from its
    heap, and up to 1 GiB of free heap stays mapped instead of going back to the kernel, so a
    training step reuses the pages the step before freed instead of faulting in new ones. The
    process keeps what it freed (within those limits; it reached that peak anyway) until it exits:
    glibc cannot be put back to its adaptive thresholds, so this is not undone. Returns whether it took effect
    (False with another C library: musl, macOS, Windows, and where the user tuned malloc through
    its environment variables, which it leaves alone)."""
    tuned = (any(name.startswith("MALLOC_") for name in os.environ)
             or "malloc" in os.environ.get("GLIBC_TUNABLES", ""))
    if tuned or not is_glibc():
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    heap_blocks = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX))
    return heap_blocks and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def is_glibc() -> bool:
    """Whether this process runs on GNU libc (asked of the C library itself, without reading files)."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (AttributeError, ValueError, OSError):  # no confstr (Windows), or a C library without the name
        return False


_PER_THREAD = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


def set_flush_denormal_on_every_thread(on: bool, threads: int) -> bool:
    """torch.set_flush_denormal(on) on the calling thread and on each of `threads` OpenMP threads.
    GOMP_parallel (GNU OpenMP's entry point, which LLVM's and Intel's runtimes also provide) runs
    the callback once on each thread of PyTorch's pool. Returns whether the mode now holds on every
    thread, checked on a product split over them (False on CPUs without the mode, e.g. ARM ones
    whose PyTorch lacks it, and where PyTorch's OpenMP runtime is not found: macOS, Windows)."""
    if not torch.set_flush_denormal(on):
        return False
    runtime = _torch_openmp_runtime() if threads > 1 else None
    if runtime is not None:
        callback = _PER_THREAD(lambda _: torch.set_flush_denormal(on))  # referenced until the call returns
        runtime.GOMP_parallel(callback, None, ctypes.c_uint(threads), ctypes.c_uint(0))
    return _denormals_flushed() == on


def _denormals_flushed() -> bool:
    """Whether a product of denormals, split over the pool's threads, came out all zeros."""
    tiny = torch.ones(1 << 18, dtype=torch.int32).view(torch.float32)  # 1.4e-45 from its bits: no arithmetic
    return bool(((tiny * 1.0) == 0).all())


def _torch_openmp_runtime() -> ctypes.CDLL | None:
    """The OpenMP runtime PyTorch's own wheel loaded: opening its path again gives the loaded copy,
    where a bare name, or another package's runtime, would start a pool of its own."""
    path = torch_openmp_path()
    if path is None:
        return None
    try:
        runtime = ctypes.CDLL(str(path))
    except OSError:
        return None
    return runtime if hasattr(runtime, "GOMP_parallel") else None


def torch_openmp_path() -> Path | None:
    """The file of the OpenMP runtime PyTorch's wheel loaded (under torch/lib or torch.libs), found in
    this process's memory map (Linux only; None elsewhere or where none is found)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:  # not Linux
        return None
    torch_dirs = (Path(torch.__file__).parent, Path(torch.__file__).parent.parent / "torch.libs")
    fields = (line.split(maxsplit=5) for line in maps.splitlines())
    paths = {Path(f[5]) for f in fields if len(f) == 6 and f[5].startswith("/")}
    for path in sorted(paths):
        owned = any(folder in path.parents for folder in torch_dirs)
        if owned and path.name.startswith(("libgomp", "libiomp5", "libomp")):
            return path
    return None
