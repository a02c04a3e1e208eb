"""CPU settings of a run: the flush of denormals reaches every thread of PyTorch's pool and is undone
after the block; freed memory is kept for the next step (glibc)."""
from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from gankit.training.cpu import is_glibc, keep_freed_memory, torch_cpu_settings

DENORMAL = 1e-39  # below float32's smallest normal, 1.2e-38


def product_of(denormals: torch.Tensor) -> torch.Tensor:
    # a large elementwise product is split over the pool's threads: each flushes (or not) its own part
    # (with the calling thread's flag alone, half of this came out non-zero on 2 threads)
    return denormals * 1.0


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


x86_linux_openmp = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64")
    or "OpenMP" not in torch.__config__.parallel_info(),
    reason="the flush reaches every thread where PyTorch's OpenMP runtime is found: x86 Linux")


@x86_linux_openmp
def test_denormals_are_flushed_on_every_thread_inside_the_block_only(two_threads):
    denormals = torch.full((1 << 21,), DENORMAL)  # made before: the pool exists, as in any process that has computed
    assert (denormals != 0).all()
    with torch_cpu_settings(threads=2, flush_denormals=True) as flushed:
        assert flushed and torch.get_num_threads() == 2
        assert (product_of(denormals) == 0).all()  # a worker thread left out would keep its part
    assert (product_of(denormals) != 0).all()


@x86_linux_openmp
def test_off_or_on_a_gpu_run_the_block_leaves_the_mode_alone(two_threads):
    denormals = torch.full((1 << 21,), DENORMAL)
    for settings in ({"flush_denormals": False}, {"flush_denormals": True, "device_type": "cuda"}):
        with torch_cpu_settings(threads=2, **settings) as flushed:
            assert flushed  # nothing was asked of the CPU, so nothing is missing
            assert (product_of(denormals) != 0).all()
    torch.set_flush_denormal(True)  # the caller's own choice (on this thread) survives a block that is off
    with torch_cpu_settings(threads=2, flush_denormals=False):
        pass
    assert torch.tensor([DENORMAL]).item() == 0
    torch.set_flush_denormal(False)


def test_the_thread_count_is_restored():
    before = torch.get_num_threads()
    with torch_cpu_settings(threads=1, flush_denormals=True):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")


def test_glibc_is_recognised():
    assert is_glibc() == (platform.libc_ver()[0] == "glibc")


# A fresh process (the setting is process-wide and cannot be undone) allocates, writes and frees
# 36 MB in 12 MB blocks, ten times, and prints the page faults of one round, before and after a
# CPU block; glibc's default hands the memory back each round and faults every page in again.
CHURN = """
import ctypes, resource
from gankit.training.cpu import torch_cpu_settings
libc = ctypes.CDLL(None)
libc.prctl(41, 1, 0, 0, 0)  # PR_SET_THP_DISABLE: 4 KiB pages, as the counts below assume
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 12 << 20
def churn():
    blocks = [libc.malloc(SIZE) for _ in range(3)]
    for block in blocks:
        ctypes.memset(block, 1, SIZE)
    for block in blocks:
        libc.free(block)
def faults_per_round():
    churn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        churn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
print(faults_per_round())
with torch_cpu_settings(threads=1, flush_denormals=False):
    pass
print(faults_per_round())
"""


@glibc_only
def test_a_cpu_block_keeps_freed_memory_for_reuse():
    # glibc's defaults in the child, whatever this environment tunes
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    done = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, check=True, env=env)
    out = done.stdout.split()
    pages = 3 * (12 << 20) // 4096
    before, after = float(out[0]), float(out[1])
    assert before > pages / 2  # glibc's default: the memory went back and came again
    assert after < pages / 100


@glibc_only
def test_a_user_who_tuned_malloc_keeps_their_settings(monkeypatch):
    for name in [n for n in os.environ if n.startswith("MALLOC_")]:
        monkeypatch.delenv(name)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert keep_freed_memory()
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert not keep_freed_memory()
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=131072")
    assert not keep_freed_memory()
