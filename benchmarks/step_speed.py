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

--turns K instead keeps one process of each kind alive per row and lets them take turns: after
its warm-up each one waits, and then each in turn trains a window (the MLP 100 steps, the DCGAN 10,
or --window: about a second each at batch 64 on a 2-core CPU, four at 256) while the others wait,
K times around. The windows of one turn run within a few seconds of each other, so a machine
that switches between speeds for seconds or minutes (docs/benchmarks.md) slows the kinds of one
turn alike; the table gives the median images/s of each kind's windows, and stderr each turn's
ratio. gankit's windows are steps of one `Trainer.fit`, paused between windows, with one logged
step in each (train.log_every set to the window).

    python benchmarks/step_speed.py --turns 15 --kinds gankit torch tf
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
            "gankit-bf16": ["train.precision=bf16"], "gankit-torch-adam": ["train.adam_kernel=torch"]}
NETS = {
    "mlp": ("seed-mnist-mlp", []),
    "dcgan": ("mnist-dcgan", ["model.conv_width=64", "model.d_conv_width=0", "model.d_dropout=0.3",
                              "model.d_batch_norm=false", "train.ema_decay=0", "model.z_categories=0",
                              "model.code_batch_norm=false", "loss.info_weight=0", "loss.info_warp=0", "loss.info_real=0",
                              "loss.mode_seeking=0", "optim_g.lr=0.0002"]),
}

# (warm-up steps, timed steps) per net unless --warmup / --steps
LENGTHS = {"mlp": (500, 300), "dcgan": (30, 60)}
# steps per window under --turns unless --window: about a second each at batch 64 on a 2-core CPU
WINDOWS = {"mlp": 100, "dcgan": 10}


def config(net: str, batch: int, extra: list[str]):
    from gankit import config as config_mod
    from gankit.presets import load_preset

    preset, sets = NETS[net]
    data = [f"data.root={MNIST}", "data.split=test"] if MNIST.is_dir() else []
    return config_mod.with_overrides(load_preset(preset), [*data, *sets, f"train.batch_size={batch}", *extra])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- gankit

def gankit_config(net: str, batch: int, extra: list[str]):
    """The benchmark's gankit run: the preset's defaults, nothing saved, drawn or scored mid-run."""
    return config(net, batch, ["train.device=cpu", "train.snapshot_every=0", "train.checkpoint_every=1000000",
                               "train.drs_steps=0", "eval.every=0", "train.max_minutes=0", *extra])


def run_gankit(net: str, batch: int, steps: int, warmup: int, extra: list[str]) -> dict:
    from gankit.training import Trainer

    cfg = gankit_config(net, batch, [f"train.log_every={warmup}", *extra])
    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(cfg, run).fit(warmup + steps, progress=False)
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r["seconds"] for r in rows if "d_loss" in r}
    seconds = logged[warmup + steps] - logged[warmup]
    return {"images_per_s": steps * batch / seconds, "peak_rss_mb": peak_rss_mb(), "device": str(trainer.device),
            "precision": trainer.precision_choice.name}  # auto's choice may differ between runs near its threshold


def answer(message: dict) -> None:
    """One line of a worker's side of --turns, on stdout."""
    print(json.dumps(message), flush=True)


def take_turns(timed_steps, ready: dict) -> None:
    """A worker's side of --turns, after its warm-up: say `ready`, then for each step count read from
    stdin train that many steps (`timed_steps(n)`: seconds) and answer with the seconds; on "stop"
    (or the end of stdin), with the peak memory."""
    answer({"ready": True, **ready})
    for line in sys.stdin:
        if line.strip() == "stop":
            break
        steps = int(line)
        answer({"seconds": timed_steps(steps), "steps": steps})
    answer({"peak_rss_mb": peak_rss_mb()})


class _Stopped(Exception):
    """The coordinator has no more windows for this worker."""


class WindowsOfOneFit:
    """gankit's side of --turns: one `Trainer.fit`, paused after the warm-up and after each window.
    A wrapper around the last call of each step (the progress bar's advance) counts the steps; at
    the end of the warm-up it says ready, at the end of a window it answers with the window's
    seconds and steps (a step rolled back would show as steps missing), and then it waits for the
    next window's step count on stdin."""

    def __init__(self, trainer, warmup: int):
        self.trainer, self.commands = trainer, iter(sys.stdin)
        self.steps_left, self.serving = max(warmup, 1), False
        self.window_steps, self.first_step, self.started = 0, 0, 0.0
        self.advance = trainer.log.advance
        trainer.log.advance = self.after_step

    def after_step(self) -> None:
        self.advance()
        self.steps_left -= 1
        if self.steps_left > 0:
            return
        if self.serving:
            answer({"seconds": time.perf_counter() - self.started, "steps": self.trainer.step - self.first_step})
        else:
            answer({"ready": True, "precision": self.trainer.precision_choice.name})
            self.serving = True
        command = next(self.commands, "stop").strip()
        if command == "stop":
            raise _Stopped
        self.steps_left = self.window_steps = int(command)
        self.first_step, self.started = self.trainer.step, time.perf_counter()


def turns_gankit(net: str, batch: int, warmup: int, extra: list[str]) -> None:
    from gankit.training import Trainer

    with tempfile.TemporaryDirectory() as run:
        trainer = Trainer(gankit_config(net, batch, extra), run)
        WindowsOfOneFit(trainer, warmup)
        try:
            trainer.fit(10**9, progress=False)
        except _Stopped:
            pass
    answer({"peak_rss_mb": peak_rss_mb()})


# --------------------------------------------------------------------------- plain PyTorch

def run_torch(net: str, batch: int, steps: int, warmup: int, extra: list[str]) -> dict:
    step = plain_torch_step(net, batch, extra)
    for _ in range(warmup):
        step()
    seconds = timed_steps(step, steps)
    return {"images_per_s": steps * batch / seconds, "peak_rss_mb": peak_rss_mb(), "device": "cpu"}


def turns_torch(net: str, batch: int, warmup: int, extra: list[str]) -> None:
    step = plain_torch_step(net, batch, extra)
    for _ in range(warmup):
        step()
    take_turns(lambda n: timed_steps(step, n), {})


def timed_steps(step, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - started


def plain_torch_step(net: str, batch: int, extra: list[str]):
    """The plain loop's step (pytorch/examples' DCGAN order) over the benchmark's networks."""
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

    return step


def plain_dropout(net) -> None:
    """gankit's D layers use its own faster CPU dropout; a plain loop has PyTorch's nn.Dropout."""
    import torch.nn as nn

    for parent in list(net.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.Dropout) and type(child) is not nn.Dropout:
                setattr(parent, name, nn.Dropout(child.p))


# --------------------------------------------------------------------------- orchestration

def worker_command(kind: str, net: str, batch: int, args, gankit_sets: list[str] = ()) -> list[str] | None:
    """The command of one measurement's process (None: TF-Keras's Python is absent). `gankit_sets`:
    config overrides for gankit's workers only."""
    if kind == "tf":
        if not args.tf_python or not Path(args.tf_python).is_file():
            return None
        cmd = [args.tf_python, str(REPO / "benchmarks" / "tf_step.py")]
    else:
        cmd = [sys.executable, __file__, "--worker", kind.split("-")[0]]
        sets = [*(gankit_sets if kind.startswith("gankit") else []), *args.set, *VARIANTS.get(kind, [])]
        cmd += [a for s in sets for a in ("--set", s)]
    warmup, steps = lengths(net, args)
    return cmd + ["--net", net, "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup)]


def worker_env(args) -> dict[str, str]:
    return dict(os.environ, **({"OMP_NUM_THREADS": str(args.threads)} if args.threads else {}))


def measure(kind: str, net: str, batch: int, args) -> dict | None:
    cmd = worker_command(kind, net, batch, args)
    if cmd is None:
        return None
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=worker_env(args)).stdout
    return json.loads(out.strip().splitlines()[-1])


class TurnWorker:
    """One kind's process under --turns: warmed up, then training a window whenever asked."""

    def __init__(self, cmd: list[str], args):
        self.process = subprocess.Popen([*cmd, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True, env=worker_env(args))
        self.ready: dict = {}

    def wait_until_ready(self) -> None:
        """Returns once the warm-up is done (so the next worker warms up alone)."""
        self.ready = self._answer("ready")
        self.ready.pop("ready")

    def window(self, steps: int) -> float:
        """Seconds of `steps` steps."""
        self._send(f"{steps}")
        got = self._answer("seconds")
        if got["steps"] != steps:
            raise RuntimeError(f"a benchmark worker trained {got['steps']} steps in a window of {steps} "
                               "(a step rolled back?)")
        return got["seconds"]

    def stop(self) -> float:
        """Ends the process; returns its peak resident memory in MB."""
        self._send("stop")
        peak = self._answer("peak_rss_mb")["peak_rss_mb"]
        self.process.wait()
        return peak

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def _send(self, line: str) -> None:
        try:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            self._ended()

    def _answer(self, key: str) -> dict:
        """The worker's next message holding `key`; other lines on its stdout (a library's) go to stderr."""
        while line := self.process.stdout.readline():
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if isinstance(message, dict) and key in message:
                return message
            print(line, end="", file=sys.stderr)
        self._ended()

    def _ended(self):
        raise RuntimeError(f"a benchmark worker ended early (exit status {self.process.wait()}); its error is above")


def measure_in_turns(net: str, batch: int, args) -> dict[str, list[dict]]:
    """Each kind's images/s in each of args.turns turns (and its peak memory), the kinds' windows
    taken one after another, in reversed order every other turn."""
    workers: dict[str, TurnWorker] = {}
    speeds: dict[str, list[float]] = {}
    window_steps = window(net, args)
    try:
        for kind in args.kinds:
            # one logged step in every window (any window_steps steps in a row hold one multiple of it)
            cmd = worker_command(kind, net, batch, args, gankit_sets=[f"train.log_every={window_steps}"])
            if cmd is not None:
                workers[kind] = TurnWorker(cmd, args)
                workers[kind].wait_until_ready()
        for turn in range(args.turns):
            kinds = list(workers) if turn % 2 == 0 else list(reversed(workers))
            for kind in kinds:
                speeds.setdefault(kind, []).append(window_steps * batch / workers[kind].window(window_steps))
            print(f"turn {turn + 1}: {net} batch {batch}: " + describe_turn({k: v[-1] for k, v in speeds.items()}),
                  file=sys.stderr, flush=True)
        peaks = {kind: worker.stop() for kind, worker in workers.items()}
    finally:
        for worker in workers.values():
            worker.kill()
    return {kind: [{"images_per_s": v, "peak_rss_mb": peaks[kind], **workers[kind].ready} for v in values]
            for kind, values in speeds.items()}


def faster_peer(speed: dict[str, float | None]) -> float | None:
    """The faster of the plain PyTorch loop and TF-Keras in images/s (None: neither measured)."""
    return max(speed.get("torch") or 0.0, speed.get("tf") or 0.0) or None


def describe_turn(speed: dict[str, float]) -> str:
    """One turn's images/s, and each gankit kind's ratio to the turn's faster peer."""
    peer = faster_peer(speed)
    parts = [f"{kind} {value:,.0f}" for kind, value in speed.items()]
    if peer:
        parts += [f"{kind} / faster peer {value / peer:.2f}x" for kind, value in speed.items() if kind.startswith("gankit")]
    return ", ".join(parts)


def lengths(net: str, args) -> tuple[int, int]:
    warmup, steps = LENGTHS[net]
    return (warmup if args.warmup is None else args.warmup), (steps if args.steps is None else args.steps)


def window(net: str, args) -> int:
    """Steps per window under --turns."""
    return args.window or WINDOWS[net]


def at_least(low: int):
    def whole_number(text: str) -> int:
        if not text.isdigit() or int(text) < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {low}")
        return int(text)
    return whole_number


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
    parser.add_argument("--turns", type=at_least(0), default=0,
                        help="one process per kind and row, taking turns at windows of steps, this many "
                             "times around (0: --rounds of fresh processes)")
    parser.add_argument("--window", type=at_least(1), help="steps per window under --turns (default: mlp 100, dcgan 10)")
    parser.add_argument("--steps", type=int, help="timed steps (default: mlp 300, dcgan 60)")
    parser.add_argument("--warmup", type=int, help="steps before the timing (default: mlp 500, dcgan 30)")
    parser.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for every process (0: default)")
    parser.add_argument("--tf-python", default=str(REPO.parent / "tf-env" / "bin" / "python"))
    parser.add_argument("--set", action="append", default=[], help="gankit config override for the gankit rows")
    parser.add_argument("--worker", choices=["gankit", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--net", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # a worker under --turns
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    results: dict[tuple, list[dict]] = {}
    if args.turns:
        for net in args.nets:
            for batch in args.batches:
                for kind, rows in measure_in_turns(net, batch, args).items():
                    results[(net, batch, kind)] = rows
        print_table(results, args)
        return
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


def run_worker(args) -> None:
    """A gankit or plain-PyTorch measurement process (--worker), timing steps or (--turns) windows."""
    if args.serve:
        serve = turns_gankit if args.worker == "gankit" else turns_torch
        serve(args.net, args.batch, args.warmup, args.set)
        return
    work = run_gankit if args.worker == "gankit" else run_torch
    print(json.dumps(work(args.net, args.batch, args.steps, args.warmup, args.set)))


def print_table(results: dict, args) -> None:
    def median(net, batch, kind, key="images_per_s"):
        rows = results.get((net, batch, kind))
        return statistics.median(r[key] for r in rows) if rows else None

    ours = [k for k in args.kinds if k.startswith("gankit")]
    fmt = lambda v: f"{v:,.0f}" if v else "-"  # noqa: E731
    print(f"| networks | batch | {' | '.join(ours)} | plain PyTorch | TF-Keras | "
          f"{' | '.join(k + ' / faster peer' for k in ours)} | peak MB: gankit / PyTorch / TF | "
          f"(images/s, median of {how_measured(args)})")
    print("| --- " * (4 + 2 * len(ours) + 1) + "|")
    for net in args.nets:
        for batch in args.batches:
            speed = {k: median(net, batch, k) for k in (*ours, "torch", "tf")}
            mem = {k: median(net, batch, k, "peak_rss_mb") for k in ("gankit", "torch", "tf")}
            peer = faster_peer(speed)
            ratio = [f"{speed[k] / peer:.2f}x" if speed[k] and peer else "-" for k in ours]
            print(f"| {net}, {steps_timed(net, args)} | {batch} | {' | '.join(fmt(speed[k]) for k in ours)} | {fmt(speed['torch'])} | "
                  f"{fmt(speed['tf'])} | {' | '.join(ratio)} | "
                  f"{fmt(mem['gankit'])} / {fmt(mem['torch'])} / {fmt(mem['tf'])} |")


def how_measured(args) -> str:
    if args.turns:
        return f"{args.turns} windows per kind, taken in turns"
    return f"{args.rounds} alternating rounds"


def steps_timed(net: str, args) -> str:
    warmup, steps = lengths(net, args)
    if args.turns:
        return f"windows of {window(net, args)} steps from step {warmup}"
    return f"steps {warmup}-{warmup + steps}"


if __name__ == "__main__":
    main()
