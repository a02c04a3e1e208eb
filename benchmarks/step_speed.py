"""Training-step speed and peak memory: gankit against a plain PyTorch loop and the TF-Keras tutorial step.

The same networks, optimiser, batch and loss in all three (the work defined by the articles):
- `mlp`: the probability-view article's MLP GAN (`seed-mnist-mlp`: G 100-128-256-512-1024-784,
  D 784-512-256-128-1, ReLU, Adam 2e-4 / 0.5);
- `dcgan`: the TensorFlow DCGAN tutorial's 28x28 networks (`mnist-dcgan` with model.conv_width=64 for G
  and D, model.d_dropout=0.3, model.d_batch_norm=false, no EMA, no InfoGAN categories, G's rate 2e-4 like D's).
Each measurement runs in a fresh process (threads as the machine gives them, unless --threads):
- gankit: `Trainer.fit`, the normal training entry point, with the preset's own defaults; the speed
  is taken between two logged steps after a warm-up, so start-up and the final save are left out;
- torch: a plain loop in the style of pytorch/examples' DCGAN (written below; the same layers with
  PyTorch's own nn.Dropout, data as a float tensor in memory, D on the real batch and on G's
  detached batch, then G through D again);
- tf: the TF DCGAN tutorial's `tf.function` train step (benchmarks/tf_step.py), run with the
  Python of a separate virtual environment holding tensorflow-cpu (--tf-python; skipped if absent).
By default each measurement times the steady state of a long run: the MLP over steps 500-800
(by step 400 a GAN's Adam state fills with denormal floats, which slow any loop that leaves them
unflushed: docs/benchmarks.md), the DCGAN over steps 30-90 (each of its steps is 10-20 times an
MLP step); --warmup and --steps set both nets' lengths instead.
Rounds alternate the three, so a machine whose speed drifts affects them alike; the table gives
the median images/s per cell, the ratios to the faster peer, and peak resident memory.

    python benchmarks/step_speed.py --rounds 3 --kinds gankit torch tf
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MNIST = REPO.parent / "shared" / "data" / "mnist"
VARIANTS = {"gankit-simultaneous": ["train.schedule=simultaneous"], "gankit-shared": ["train.schedule=shared"],
            "gankit-alternating": ["train.schedule=alternating"], "gankit-fp32": ["train.precision=fp32"],
            "gankit-bf16": ["train.precision=bf16"]}
NETS = {
    "mlp": ("seed-mnist-mlp", []),
    "dcgan": ("mnist-dcgan", ["model.conv_width=64", "model.d_conv_width=0", "model.d_dropout=0.3",
                              "model.d_batch_norm=false", "train.ema_decay=0", "model.z_categories=0",
                              "model.code_batch_norm=false", "loss.info_weight=0", "loss.mode_seeking=0",
                              "optim_g.lr=0.0002"]),
}

# (warm-up steps, timed steps) per net unless --warmup / --steps
LENGTHS = {"mlp": (500, 300), "dcgan": (30, 60)}


def config(net: str, batch: int, extra: list[str]):
    from gankit import config as config_mod
    from gankit.presets import load_preset

    preset, sets = NETS[net]
    data = [f"data.root={MNIST}", "data.split=test"] if MNIST.is_dir() else []
    return config_mod.with_overrides(load_preset(preset), [*data, *sets, f"train.batch_size={batch}", *extra])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- gankit

def run_gankit(net: str, batch: int, steps: int, warmup: int, extra: list[str]) -> dict:
    from gankit.training import Trainer

    cfg = config(net, batch, ["train.device=cpu", "train.snapshot_every=0", "train.checkpoint_every=1000000",
                              "train.drs_steps=0",
                              "eval.every=0", f"train.log_every={warmup}", *extra])
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(cfg, run).fit(warmup + steps, progress=False)
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["seconds"] for r in rows if "d_loss" in r}
    seconds = logged[warmup + steps] - logged[warmup]
    return {"images_per_s": steps * batch / seconds, "peak_rss_mb": peak_rss_mb(), "device": str(trainer.device),
            "precision": trainer.precision_choice.name}  # auto's choice may differ between runs near its threshold


# --------------------------------------------------------------------------- plain PyTorch

def run_torch(net: str, batch: int, steps: int, warmup: int, extra: list[str]) -> dict:
    import torch
    import torch.nn.functional as F

    from gankit.data import make_source
    from gankit.models import MODELS

    cfg = config(net, batch, extra)
    torch.manual_seed(0)
    g, d = MODELS.get(cfg.model.name)(cfg.model, (1, 28, 28), 0)  # the same layers, a plain loop around them
    plain_dropout(d)
    source = make_source(cfg.data)
    data = source.images.float().div(127.5).sub(1.0)  # the whole set as floats in [-1, 1], as loaders give it
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.optim_g.lr, betas=(cfg.optim_g.beta1, cfg.optim_g.beta2))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.optim_d.lr, betas=(cfg.optim_d.beta1, cfg.optim_d.beta2))
    ones, zeros = torch.ones(batch), torch.zeros(batch)

    def step() -> None:
        real = data[torch.randint(len(data), (batch,))]
        fake = g(torch.randn(batch, cfg.model.z_dim))
        opt_d.zero_grad()
        loss_d = F.binary_cross_entropy_with_logits(d(real), ones) + \
            F.binary_cross_entropy_with_logits(d(fake.detach()), zeros)
        loss_d.backward()
        opt_d.step()
        opt_g.zero_grad()
        F.binary_cross_entropy_with_logits(d(fake), ones).backward()
        opt_g.step()

    for _ in range(warmup):
        step()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - started
    return {"images_per_s": steps * batch / seconds, "peak_rss_mb": peak_rss_mb(), "device": "cpu"}


def plain_dropout(net) -> None:
    """gankit's D layers use its own faster CPU dropout; a plain loop has PyTorch's nn.Dropout."""
    import torch.nn as nn

    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Dropout) and type(child) is not nn.Dropout:
                setattr(parent, name, nn.Dropout(child.p))


# --------------------------------------------------------------------------- orchestration

def measure(kind: str, net: str, batch: int, args) -> dict | None:
    if kind == "tf":
        if not args.tf_python or not Path(args.tf_python).is_file():
            return None
        cmd = [args.tf_python, str(REPO / "benchmarks" / "tf_step.py")]
    else:
        cmd = [sys.executable, __file__, "--worker", kind.split("-")[0]]
        sets = args.set + VARIANTS.get(kind, [])
        cmd += [a for s in sets for a in ("--set", s)]
    warmup, steps = lengths(net, args)
    cmd += ["--net", net, "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup)]
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def lengths(net: str, args) -> tuple[int, int]:
    warmup, steps = LENGTHS[net]
    return (warmup if args.warmup is None else args.warmup), (steps if args.steps is None else args.steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nets", nargs="+", default=["mlp", "dcgan"], choices=list(NETS))
    parser.add_argument("--batches", nargs="+", type=int, default=[64, 256])
    parser.add_argument("--kinds", nargs="+", default=["gankit", "torch", "tf"],
                        help="gankit (the preset's defaults), gankit-SCHEDULE (train.schedule = alternating, "
                             "shared or simultaneous), gankit-fp32 (train.precision = fp32, as the peers compute), "
                             "gankit-bf16 (train.precision = bf16), "
                             "torch, tf")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, help="timed steps (default: mlp 300, dcgan 60)")
    parser.add_argument("--warmup", type=int, help="steps before the timing (default: mlp 500, dcgan 30)")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for every process (0: default)")
    parser.add_argument("--tf-python", default=str(REPO.parent / "tf-env" / "bin" / "python"))
    parser.add_argument("--set", action="append", default=[], help="gankit config override for the gankit rows")
    parser.add_argument("--worker", choices=["gankit", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        work = run_gankit if args.worker == "gankit" else run_torch
        print(json.dumps(work(args.net, args.batch, args.steps, args.warmup, args.set)))
        return
    results: dict[tuple, list[dict]] = {}
    for r in range(args.rounds):
        for net in args.nets:
            for batch in args.batches:
                kinds = args.kinds if r % 2 == 0 else list(reversed(args.kinds))  # alternate the order too
                for kind in kinds:
                    got = measure(kind, net, batch, args)
                    if got is not None:
                        results.setdefault((net, batch, kind), []).append(got)
                        arithmetic = f" ({got['precision']})" if "precision" in got else ""
                        print(f"round {r + 1}: {net} batch {batch} {kind}{arithmetic}: {got['images_per_s']:.0f} "
                              f"img/s, peak {got['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    print_table(results, args)


def print_table(results: dict, args) -> None:
    def median(net, batch, kind, key="images_per_s"):
        rows = results.get((net, batch, kind))
        return statistics.median(r[key] for r in rows) if rows else None

    ours = [k for k in args.kinds if k.startswith("gankit")]
    fmt = lambda v: f"{v:,.0f}" if v else "-"  # noqa: E731
    print(f"| networks | batch | {' | '.join(ours)} | plain PyTorch | TF-Keras | "
          f"{' | '.join(k + ' / faster peer' for k in ours)} | peak MB: gankit / PyTorch / TF | "
          f"(images/s, median of {args.rounds} alternating rounds)")
    print("| --- " * (4 + 2 * len(ours) + 1) + "|")
    for net in args.nets:
        for batch in args.batches:
            speed = {k: median(net, batch, k) for k in (*ours, "torch", "tf")}
            mem = {k: median(net, batch, k, "peak_rss_mb") for k in ("gankit", "torch", "tf")}
            peer = max([speed["torch"] or 0, speed["tf"] or 0]) or None
            ratio = [f"{speed[k] / peer:.2f}x" if speed[k] and peer else "-" for k in ours]
            warmup, steps = lengths(net, args)
            print(f"| {net}, steps {warmup}-{warmup + steps} | {batch} | {' | '.join(fmt(speed[k]) for k in ours)} | {fmt(speed['torch'])} | "
                  f"{fmt(speed['tf'])} | {' | '.join(ratio)} | "
                  f"{fmt(mem['gankit'])} / {fmt(mem['torch'])} / {fmt(mem['tf'])} |")


if __name__ == "__main__":
    main()
