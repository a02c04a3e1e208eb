"""How steady a training step's speed is within one process: a preset's bare step timed in windows.

Trains a preset for a warm-up, then times `--windows` windows of `--steps` bare steps each
(`Trainer.train_step`, nothing logged or saved) and, after each window, two fixed pieces of work
that no change to gankit can speed up or slow down, on the run's threads: a float32 matrix product
(512 x 512 x 512) and a multiply of 131,072 floats, which PyTorch splits over the threads. Each
window prints a line: milliseconds per step, the product's milliseconds, the multiply's
microseconds. A step whose cost does not change gives the same number in every window. On the
2-core AMD EPYC Zen 4 of docs/benchmarks.md, mnist-dcgan's bfloat16 step ran at 29-33 ms in some
windows and 38-48 ms in others of the same process. Sometimes the product slowed with it (1.9 ms
against 1.35): then the whole machine was slow. Sometimes only the work split over both threads
did: the multiply took 19 us in some seconds and 9.4-10.6 in others (16 on one thread), and the
step, made of hundreds of such split operators, slows with it. Use it to see which state a
machine is in before reading a speed comparison made on it.

    python benchmarks/step_windows.py mnist-dcgan --windows 16
    python benchmarks/step_windows.py mnist-dcgan --windows 16 --set train.precision=fp32
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from step_speed import at_least, timed_steps  # the script's own folder is on the path

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO.parent / "shared" / "data" / "mnist"


PRODUCT_SIZE, MULTIPLY_SIZE, REPEATS = 512, 131_072, 100


def reference_times(torch) -> tuple[float, float]:
    """The milliseconds of one float32 matrix product and the microseconds of one multiply split
    over the threads, each the mean of REPEATS in a row (not the best: a slow state can leave a
    single call alone and still slow most): the machine's speed at this moment, whatever the step does."""
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(PRODUCT_SIZE, PRODUCT_SIZE, generator=generator)
    b = torch.randn(PRODUCT_SIZE, PRODUCT_SIZE, generator=generator)
    x = torch.randn(MULTIPLY_SIZE, generator=generator)
    out = torch.empty_like(x)
    return mean_seconds(lambda: torch.mm(a, b)) * 1e3, mean_seconds(lambda: torch.mul(x, 1.0001, out=out)) * 1e6


def mean_seconds(work) -> float:
    work()  # first-call set-up outside the timing
    return timed_steps(work, REPEATS) / REPEATS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("preset")
    parser.add_argument("--windows", type=at_least(1), default=12)
    parser.add_argument("--steps", type=at_least(1), default=40, help="steps per window")
    parser.add_argument("--warmup", type=at_least(1), default=50, help="steps trained before the first window")
    parser.add_argument("--set", action="append", default=[], help="config override, key=value")
    args = parser.parse_args()

    import torch

    from gankit import config as config_mod
    from gankit.presets import load_preset
    from gankit.training import Trainer
    from gankit.training.cpu import torch_cpu_settings

    data = [f"data.root={MNIST}", "data.split=test"] if MNIST.is_dir() else []
    quiet = ["train.snapshot_every=0", "train.checkpoint_every=1000000", "train.drs_steps=0", "eval.every=0",
             "train.max_minutes=0"]
    cfg = config_mod.with_overrides(load_preset(args.preset), [*data, *quiet, *args.set])
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(cfg, run).fit(args.warmup, progress=False)
        with torch_cpu_settings(trainer.threads, cfg.train.flush_denormals, trainer.device.type):
            window_ms, product_ms, multiply_us = [], [], []
            for _ in range(args.windows):
                started = time.perf_counter()
                for _ in range(args.steps):
                    trainer.train_step(log=False)
                if trainer.device.type == "cuda":
                    torch.cuda.synchronize()  # a GPU's queued steps count in the window that queued them
                window_ms.append((time.perf_counter() - started) / args.steps * 1e3)
                product, multiply = reference_times(torch)
                product_ms.append(product)
                multiply_us.append(multiply)
                print(f"{window_ms[-1]:.1f} {product:.3f} {multiply:.1f}", flush=True)
    print(f"ms per step: median {statistics.median(window_ms):.1f}, fastest {min(window_ms):.1f}, "
          f"slowest {max(window_ms):.1f} ({trainer.precision_choice.name}, {trainer.threads} threads); "
          f"the reference product: fastest {min(product_ms):.3f}, slowest {max(product_ms):.3f} ms; "
          f"the multiply: fastest {min(multiply_us):.1f}, slowest {max(multiply_us):.1f} us",
          file=sys.stderr)


if __name__ == "__main__":
    main()
