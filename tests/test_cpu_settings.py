"""train.flush_denormals reaches every CPU thread of PyTorch's pool, and the block restores what it changed."""
from __future__ import annotations

import pytest
import torch

from gankit.training.cpu import torch_cpu_settings

DENORMAL = 1e-39  # below float32's smallest normal, 1.2e-38


def product_of(denormals: torch.Tensor) -> torch.Tensor:
    # a large elementwise product is split over the pool's threads: each flushes (or not) its own part
    # (with the calling thread's flag alone, half of this came out non-zero on 2 threads)
    return denormals * 1.0


@pytest.mark.skipif("OpenMP" not in torch.__config__.parallel_info(), reason="PyTorch built without OpenMP")
def test_denormals_are_flushed_on_every_thread_inside_the_block_only():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    denormals = torch.full((1 << 21,), DENORMAL)  # made before: the pool exists, as in any process that has computed
    assert (denormals != 0).all()
    with torch_cpu_settings(threads=2, flush_denormals=True):
        assert torch.get_num_threads() == 2
        assert (product_of(denormals) == 0).all()  # a worker thread left out would keep its part
    assert (product_of(denormals) != 0).all()
    with torch_cpu_settings(threads=2, flush_denormals=False):
        assert (product_of(denormals) != 0).all()
    torch.set_num_threads(before)


def test_the_thread_count_is_restored():
    before = torch.get_num_threads()
    with torch_cpu_settings(threads=1, flush_denormals=True):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
