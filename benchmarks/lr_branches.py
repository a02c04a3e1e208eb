"""Learning rates for the end of a short run, compared on one trajectory: a preset trains to a branch
step, then the same saved state (weights, optimisers, EMA, random streams) is continued to an end
step once per variant, each scored with the bundled classifier and FID (5,000 samples of G's EMA,
seed 0, as `gankit eval RUN --metrics fid,classifier -n 5000` scores a run). The branches share
their first steps to the bit, so the comparison is free of the spread between whole trajectories;
what it does not see is a change to the steps before the branch.

Variants (any number, in order):
    const    the preset's rates (the reference)
    wdF      both rates falling linearly from the branch to F times the preset's at the end step
    upF      both rates F times the preset's from the branch on
    gF, dF   G's rate, or D's, F times the preset's from the branch on

    python benchmarks/lr_branches.py --seed 0 --branch 2200 --end 3600 const wd0 up1.5 d2
"""
from __future__ import annotations

import argparse
import io
import json
import re
import sys
import tempfile
import time

import torch

from gankit import config
from gankit.metrics import evaluate as metrics_eval
from gankit.presets import load_preset
from gankit.training import Trainer
from gankit.training.cpu import torch_cpu_settings


def rate_factors(variant: str, branch: int, end: int):
    """(G's factor, D's factor) of the preset's rate at each step, for one variant."""
    parsed = re.fullmatch(r"const|(wd|up|g|d)(\d+(?:\.\d*)?)", variant)
    if parsed is None:
        fail(f"unknown variant '{variant}'; use const, wdF, upF, gF or dF (F a number, e.g. wd0.2)")
    kind, f = parsed.group(1), float(parsed.group(2) or 1.0)
    if kind is None:
        return lambda step: (1.0, 1.0)
    if kind == "wd":  # 1 at the branch, f at the end's last step, as learning_rate_factor falls
        def falling(step: int) -> tuple[float, float]:
            share = min(max(step - branch, 0) / max(end - 1 - branch, 1), 1.0)
            return (1.0 - (1.0 - f) * share,) * 2
        return falling
    return lambda step: (f if kind in ("up", "g") else 1.0, f if kind in ("up", "d") else 1.0)


def fail(message: str) -> None:
    print(f"lr_branches.py: {message}", file=sys.stderr)
    sys.exit(2)


def score(trainer: Trainer, samples: int) -> dict:
    result = metrics_eval.evaluate(trainer.eval_target(), ["classifier", "fid"], samples, 0)
    return {k: result[k] for k in ("classifier_score", "confident", "fid", "classes_covered")}


def train_to(trainer: Trainer, step: int, factors) -> None:
    """Training steps up to `step`, each at the rates the trainer would set (the preset's own
    schedule included) times the variant's factors."""
    while trainer.step < step:
        trainer.set_learning_rates(trainer.step)
        for opt, factor in zip((trainer.opt_g, trainer.opt_d), factors(trainer.step)):
            for group in opt.param_groups:
                group["lr"] *= factor
        trainer.train_step(log=False)
        trainer.step += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("variants", nargs="+")
    parser.add_argument("--preset", default="mnist-dcgan")
    parser.add_argument("--data", default="../shared/data/mnist")
    parser.add_argument("--split", default="test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--branch", type=int, default=2200)
    parser.add_argument("--end", type=int, default=3600)
    parser.add_argument("--samples", type=int, default=5000, help="generated samples scored per branch")
    args = parser.parse_args()
    if not 0 < args.branch < args.end:
        fail(f"--branch {args.branch} --end {args.end}: the branch must lie after step 0 and before the end")
    factors = {v: rate_factors(v, args.branch, args.end) for v in args.variants}  # bad names stop here
    cfg = config.with_overrides(load_preset(args.preset), [
        f"data.root={args.data}", f"data.split={args.split}", f"train.seed={args.seed}", f"train.steps={args.end}"])
    # the steps run here, not through fit(): nothing is saved, so the run folder can go with the process
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(cfg, run_dir)
        branches(trainer, args, factors)


def branches(trainer: Trainer, args: argparse.Namespace, factors: dict) -> None:
    with torch_cpu_settings(trainer.threads, trainer.cfg.train.flush_denormals, trainer.device.type):
        started = time.perf_counter()
        train_to(trainer, args.branch, rate_factors("const", args.branch, args.end))
        seconds = round(time.perf_counter() - started, 1)
        print(json.dumps({"seed": args.seed, "step": args.branch, "seconds": seconds, **score(trainer, args.samples)}),
              flush=True)
        saved = io.BytesIO()
        torch.save(trainer.state_dict(), saved)
        for variant in args.variants:
            saved.seek(0)
            trainer.load_state_dict(torch.load(saved, weights_only=False))
            started = time.perf_counter()
            train_to(trainer, args.end, factors[variant])
            seconds = round(time.perf_counter() - started, 1)
            print(json.dumps({"seed": args.seed, "variant": variant, "step": trainer.step, "seconds": seconds,
                              **score(trainer, args.samples)}), flush=True)


if __name__ == "__main__":
    main()
