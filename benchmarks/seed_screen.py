"""Recipes screened over many seeds at a fixed step count. Each recipe (the preset with its own
--set overrides) trains exactly --steps steps on every seed: at equal steps the host's speed, which
drifts within a session, is out of the comparison (a recipe that costs more a step is compared at
equal steps, not equal time). The runs go --jobs at a time with one thread each, a seed's recipes
next to each other, and each run is scored as `gankit eval RUN --metrics M -n N --json` scores it,
on its last checkpoint, and with --score-at on its checkpoints at those steps too (the score
against the step count, from the same runs). Prints one JSON line per run, then a table for each
step scored: each recipe's score on every seed, its mean, and its paired difference to the first
recipe (the mean, and on how many seeds it was above and below). A run already scored under --out
is not trained again, so an interrupted screen goes on where it stopped.

Why many seeds: at `mnist-dcgan`'s 5-minute step count the runs of one recipe spread over about a
point of classifier score between seeds, and the paired differences between two recipes of equal
worth had a standard deviation of 0.49 over ten seeds (docs/results.md): a gain of 0.3 needs about
eleven seeds to stand two standard errors clear of nothing, one of 0.4 about six.

    python benchmarks/seed_screen.py --steps 2500 --seeds 6 7 8 9 10 11 12 13 \
        --set data.root=../shared/data/mnist --set data.split=test \
        --recipe preset --recipe w3 loss.info_real=3
    python benchmarks/seed_screen.py --steps 7000 --score-at 2500 3000 3500 4000 5000 6000 \
        --seeds 12 13 14 15 --set data.root=../shared/data/mnist --set data.split=test --recipe preset
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gankit.cli import resolve_config
from gankit.errors import UserError
from gankit.io import atomic_write_text
from gankit.metrics.evaluate import METRICS, check_sample_count

# set by the screen itself: a recipe's own value would be overridden without a word
SCREEN_KEYS = ("train.steps", "train.seed", "train.max_minutes", "train.threads")
# set by the screen as well when it scores checkpoints along the way (--score-at)
CHECKPOINT_KEYS = ("train.checkpoint_every", "train.keep_checkpoints")
GANKIT = [sys.executable, "-m", "gankit"]  # the CLI, as a user runs it
MAX_CHECKPOINTS = 100  # a run's checkpoints kept for --score-at (each a full training state)


def fail(message: str) -> None:
    print(f"seed_screen.py: {message}", file=sys.stderr)
    sys.exit(2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="mnist-dcgan")
    parser.add_argument("--steps", type=int, required=True, help="training steps of every run")
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--score-at", type=int, nargs="+", default=[], metavar="STEP",
                        help="earlier steps at which every run is scored too, from its checkpoints")
    parser.add_argument("--recipe", nargs="+", action="append", required=True, metavar=("NAME", "KEY=VALUE"),
                        help="a recipe: its name, then its overrides of the preset (repeatable; the first is "
                             "the reference the others are paired with)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for every recipe, e.g. data.root=../shared/data/mnist")
    parser.add_argument("--metrics", default="fid,classifier")
    parser.add_argument("--key", default="classifier_score", help="the metric tabulated and paired")
    parser.add_argument("-n", "--samples", type=int, default=5000)
    parser.add_argument("--jobs", type=int, default=2, help="runs at once, one thread each (default 2)")
    parser.add_argument("--out", type=Path, default=Path("runs/seed-screen"))
    args = parser.parse_args(argv)
    check(args)
    return args


def check(args: argparse.Namespace) -> None:
    """Every recipe's config, the metrics and the sample count are checked before anything trains,
    so a typo costs no run."""
    if args.steps < 1 or args.jobs < 1:
        fail("--steps and --jobs must be at least 1")
    if len(set(args.seeds)) != len(args.seeds):
        fail(f"--seeds has a seed twice ({' '.join(map(str, args.seeds))}); give each once")
    if any(not 1 <= step < args.steps for step in args.score_at) or len(set(args.score_at)) != len(args.score_at):
        fail(f"--score-at takes distinct steps below --steps ({args.steps}, which is scored anyway); "
             f"got {' '.join(map(str, args.score_at))}")
    args.score_at = sorted(args.score_at)
    if args.score_at and args.steps // checkpoint_interval(args) > MAX_CHECKPOINTS:
        fail(f"--score-at {' '.join(map(str, args.score_at))} with --steps {args.steps} needs a checkpoint every "
             f"{checkpoint_interval(args)} steps, over {MAX_CHECKPOINTS} a run; choose steps with a larger common divisor")
    names = [recipe[0] for recipe in args.recipe]
    if len({name.lower() for name in names}) != len(names):
        fail(f"recipe names must differ (in any letter case: they name run folders); got {', '.join(names)}")
    try:
        check_sample_count(args.samples)
        for metric in args.metrics.split(","):
            METRICS.get(metric)
    except UserError as error:
        fail(str(error))
    configs = {}
    for name, *overrides in args.recipe:
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            fail(f"recipe name '{name}' must be letters, digits, '_', '.' or '-' (it names run folders), "
                 f"given before its KEY=VALUE overrides")
        keys = SCREEN_KEYS + (CHECKPOINT_KEYS if args.score_at else ())
        screened = [item for item in args.set + overrides if item.split("=")[0].strip() in keys]
        if screened:
            by = "--score-at" if screened[0].split("=")[0].strip() in CHECKPOINT_KEYS else "--steps, --seeds; one thread a run"
            fail(f"recipe '{name}': {screened[0]} is set by the screen itself ({by}); drop it")
        try:
            configs[name] = resolve_config(args.preset, args.set + overrides)
        except UserError as error:
            fail(f"recipe '{name}': {error}")
        twin = next((other for other, cfg in configs.items() if other != name and cfg == configs[name]), None)
        if twin is not None:
            fail(f"recipes '{twin}' and '{name}' give the same config (an override for one recipe goes after "
                 f"its name, not in --set)")


def settings(args: argparse.Namespace, overrides: list[str]) -> dict:
    """What a run's score depends on, kept with it so that a resumed screen reuses only its own runs."""
    return {"preset": args.preset, "steps": args.steps, "set": args.set + overrides, "metrics": args.metrics,
            "samples": args.samples, "score_at": args.score_at}


def run_one(args: argparse.Namespace, name: str, overrides: list[str], seed: int) -> dict:
    """One recipe's score on one seed: read from an earlier screen's run, or trained and scored."""
    run = args.out / f"{name}-s{seed}"
    result_file = run / "screen-result.json"
    wanted = settings(args, overrides)
    if result_file.is_file():
        result = json.loads(result_file.read_text())
        kept = {"score_at": [], **result.get("settings", {})}  # screens before --score-at scored none along the way
        differing = sorted(key for key in wanted.keys() | kept.keys() if kept.get(key) != wanted.get(key))
        if differing:
            changes = "; ".join(f"{key} {kept.get(key)} there, {wanted.get(key)} now" for key in differing)
            raise ScreenInputError(f"{run} was scored with other settings ({changes}); choose another --out")
    else:
        result = {"recipe": name, "seed": seed, **train_and_score(args, run, overrides, seed), "settings": wanted}
        atomic_write_text(result_file, json.dumps(result))  # kept before --key is checked: a rerun reuses it
    if any(args.key not in scores for scores in [result, *result.get("along", {}).values()]):
        raise ScreenInputError(f"--key {args.key} is not among the scores of --metrics {args.metrics}; "
                               f"they are {', '.join(k for k in result if k not in ('settings', 'along', 'recipe', 'seed'))}")
    return result


def checkpoint_interval(args: argparse.Namespace) -> int:
    """The checkpoint cadence that lands on every step scored."""
    return math.gcd(args.steps, *args.score_at)


def checkpoint_settings(args: argparse.Namespace) -> list[str]:
    """With --score-at, a checkpoint at every step scored, and all of them kept (step 0's too: the
    run saves one before its first step). Saving a checkpoint leaves the run's trajectory as it
    was (docs/results.md), so the final score is the same with or without."""
    if not args.score_at:
        return []
    every = checkpoint_interval(args)
    return [f"train.checkpoint_every={every}", f"train.keep_checkpoints={args.steps // every + 1}"]


def train_and_score(args: argparse.Namespace, run: Path, overrides: list[str], seed: int) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sets = [item for override in ["train.threads=1", *checkpoint_settings(args), *args.set, *overrides]
            for item in ("--set", override)]
    # a folder here without a score is an unfinished run of a screen (--out is the screen's own):
    # --overwrite replaces gankit runs only, and gankit train refuses any other folder by that name
    # and a run another process is training
    train = subprocess.run([*GANKIT, "train", args.preset, "--seed", str(seed), "--steps", str(args.steps),
                            "--max-minutes", "0", "--no-plots", "--quiet", "--overwrite", "--out", str(run), *sets],
                           env=env, capture_output=True, text=True)
    if train.returncode != 0:
        raise RuntimeError(f"training {run} failed: {train.stderr.strip()[-2000:]}")
    along = {str(step): score(args, run / "checkpoints" / f"step-{step:06d}.pt", env) for step in args.score_at}
    return {**score(args, run, env), **({"along": along} if along else {})}


def score(args: argparse.Namespace, run_or_checkpoint: Path, env: dict) -> dict:
    scored = subprocess.run([*GANKIT, "eval", str(run_or_checkpoint), "--metrics", args.metrics,
                             "-n", str(args.samples), "--json"], env=env, capture_output=True, text=True)
    if scored.returncode != 0:
        raise RuntimeError(f"scoring {run_or_checkpoint} failed: {scored.stderr.strip()[-2000:]}")
    return json.loads(scored.stdout)


class ScreenInputError(Exception):
    """Input found wrong once a run was scored: exit status 2, like the checks before training."""


def table(args: argparse.Namespace, results: dict[tuple[str, int], dict], step: int | None = None) -> str:
    """The scores at `step` (one of --score-at; default --steps), by recipe and seed."""
    step = args.steps if step is None else step
    names = [recipe[0] for recipe in args.recipe]
    value = {key: (result if step == args.steps else result["along"][str(step)])[args.key]
             for key, result in results.items()}
    lines = [f"{args.key} at {step:,} steps",
             "| recipe | " + " | ".join(f"seed {s}" for s in args.seeds) + " | mean | paired with "
             + names[0] + ": mean difference, seeds above / below |",
             "| --- " * (len(args.seeds) + 3) + "|"]
    for name in names:
        cells = [f"{value[name, s]:.2f}" for s in args.seeds]
        differences = [value[name, s] - value[names[0], s] for s in args.seeds]
        paired = "" if name == names[0] else (f"{statistics.mean(differences):+.2f}, "
                                              f"{sum(d > 0 for d in differences)} / {sum(d < 0 for d in differences)}")
        mean = statistics.mean(value[name, s] for s in args.seeds)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {mean:.2f} | {paired} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        args.out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        fail(f"cannot make --out {args.out}: {error.strerror}; choose another folder")
    jobs = [(recipe[0], recipe[1:], seed) for seed in args.seeds for recipe in args.recipe]
    results: dict[tuple[str, int], dict] = {}
    # Not a `with` block: leaving one waits for every queued run, so an error or Ctrl-C would go on
    # training the whole screen; shutdown(cancel_futures=True) drops the queued ones instead (the
    # runs under way finish, or stop at once on Ctrl-C, which reaches them too)
    pool = ThreadPoolExecutor(max_workers=args.jobs)
    try:
        futures = [pool.submit(run_one, args, name, overrides, seed) for name, overrides, seed in jobs]
        for (name, _, seed), future in zip(jobs, futures):
            results[name, seed] = future.result()
            print(json.dumps({k: v for k, v in results[name, seed].items() if k != "settings"}), flush=True)
    except ScreenInputError as error:
        fail(str(error))
    except RuntimeError as error:
        print(f"seed_screen.py: {error}", file=sys.stderr)
        sys.exit(1)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    print("\n\n".join(table(args, results, step) for step in [*args.score_at, args.steps]))


if __name__ == "__main__":
    main()
