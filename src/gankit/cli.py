"""The `gankit` command: one small function per verb, on top of the same calls as the Python API.

A mistake the user can make (flag, name, value, file) prints one line on stderr and exits 2.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from gankit import __version__
from gankit import config as config_mod
from gankit.config import RunConfig
from gankit.errors import TrainingError, UserError
from gankit.rundir import hold_run, prepare_out_dir

LIST_KINDS = ("presets", "datasets", "models", "losses", "metrics")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        print(f"gankit: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


# --------------------------------------------------------------------------- train / resume

def resolve_config(target: str, settings: list[str]) -> RunConfig:
    """A preset name, a .toml file, or a .npy/.csv file of points (the `points` preset on them),
    then --set overrides."""
    from gankit.presets import load_preset

    if Path(target).suffix.lower() in (".npy", ".csv"):
        cfg = config_mod.replace(load_preset("points"), "data", name=f"points:{Path(target).resolve()}")
    elif target.endswith(".toml") or os.sep in target or Path(target).is_file():
        cfg = config_mod.load(target)
    else:
        cfg = load_preset(target)
    return config_mod.with_overrides(cfg, settings)


def cmd_train(args: argparse.Namespace) -> None:
    from gankit.data import make_source
    from gankit.losses import LOSSES
    from gankit.models import MODELS
    from gankit.training import Trainer, resolve_device

    cfg = resolve_config(args.target, args.set)
    train_changes = {k: v for k, v in (("steps", args.steps), ("seed", args.seed), ("device", args.device),
                                       ("max_minutes", args.max_minutes)) if v is not None}
    if train_changes:
        cfg = config_mod.replace(cfg, "train", **train_changes)
    # Check every name and file before anything is written.
    source = make_source(cfg.data)
    if cfg.eval.every or cfg.eval.metrics:
        from gankit.metrics.evaluate import EvalTarget, check_metrics, default_metrics

        target = EvalTarget(source, sample=None)
        check_metrics(list(cfg.eval.metrics) or default_metrics(target), target)
    MODELS.get(cfg.model.name)
    LOSSES.get(cfg.loss.name)
    resolve_device(cfg.train.device)
    world = _join_processes(cfg.train.device)
    out = Path(args.out) if args.out else Path("runs") / f"{cfg.preset or 'run'}-{time.strftime('%Y%m%d-%H%M%S')}"
    out = _on_main(world, lambda: out)  # one name for all processes
    trainer = Trainer(cfg, out, source=source)  # builds the networks (and refuses bad combinations) before any write
    with ExitStack() as held:
        _on_main(world, lambda: (held.enter_context(hold_run(out)), prepare_out_dir(out, args.overwrite)))
        _say(world, f"gankit: training '{cfg.preset or args.target}' for {cfg.train.steps} steps"
                    f"{_time_budget(cfg.train.max_minutes)} on {trainer.device}{_processes(world)}; run directory: {out}")
        _finish(trainer, args)


def _join_processes(device: str):
    """Under torchrun, join the other processes (training/distributed.py); else a world of one."""
    from gankit.training import distributed

    return distributed.start(device) if distributed.launched_by_torchrun() else distributed.World()


def _on_main(world, work):
    """Run `work` on process 0 alone and give its result, or its UserError, to every process."""
    if not world.active:
        return work()
    from gankit.training import distributed

    result: object = None
    if world.is_main:
        try:
            result = work()
        except UserError as exc:
            result = exc
    result = distributed.from_main(result)
    if isinstance(result, UserError):
        raise result
    return result


def _say(world, text: str) -> None:
    if world.is_main:
        print(text, file=sys.stderr)


def _time_budget(minutes: float) -> str:
    return f" or {minutes:g} minutes, whichever comes first," if minutes else ""


def _processes(world) -> str:
    return f" x {world.size} processes" if world.active else ""


def cmd_resume(args: argparse.Namespace) -> None:
    from gankit.training import Trainer
    from gankit.training.checkpoint import run_dir_of

    run_dir = run_dir_of(args.run, strict=True)
    config_mod.check_resume_settings(args.set)
    saved = run_dir / "config.toml"
    world = _join_processes(config_mod.load(saved).train.device if saved.is_file() else "auto")
    with ExitStack() as held:
        # process 0 holds the run; a refusal reaches every process (none waits for the others)
        _on_main(world, lambda: held.enter_context(hold_run(run_dir)))
        settings = [*args.set, *([f"train.max_minutes={args.max_minutes}"] if args.max_minutes is not None else [])]
        trainer = Trainer.resume(args.run, settings)
        total = args.steps or trainer.cfg.train.steps
        if total < trainer.step:
            raise UserError(f"--steps {total} is below the {trainer.step} steps already done; give a larger total")
        if total > trainer.cfg.train.steps:
            trainer.cfg = config_mod.replace(trainer.cfg, "train", steps=total)
        minutes = trainer.cfg.train.max_minutes
        if trainer.step < total and trainer.guards.check_time_budget():
            raise UserError(f"{run_dir} has trained {trainer.elapsed / 60:.2f} minutes, its whole time budget "
                            f"(train.max_minutes = {minutes:g}); give it more with --max-minutes M, "
                            "or none with --max-minutes 0")
        _say(world, f"gankit: resuming {run_dir} at step {trainer.step} of {total}{_time_budget(minutes)}"
                    f"{_processes(world)}")
        _finish(trainer, args, total)


def _finish(trainer, args: argparse.Namespace, total: int | None = None) -> None:
    trainer.fit(total, progress=not args.quiet)
    if not trainer.world.is_main:
        return  # process 0 draws the plots and sums up
    out = trainer.run_dir
    if trainer.cfg.viz.plot_at_end and not args.no_plots:
        from gankit.report import write_report
        from gankit.viz.plots import plot_run

        print("gankit: drawing plots...", file=sys.stderr)
        plot_run(out)
        write_report([out])  # refreshed at every end of training
    report = out / "report.html"
    print(f"Done: {trainer.step} steps in {trainer.elapsed:.1f} s of training.\n"
          f"  run directory: {out}\n"
          f"  report:        {report if report.is_file() else 'none yet: gankit report RUN writes it'}\n"
          f"  metrics:       {out / 'metrics.jsonl'}\n"
          f"  checkpoint:    {out / 'checkpoints' / 'latest.pt'}\n"
          f"  plots:         {out / 'plots'}  ({_plot_names(out / 'plots')})\n"
          f"  samples:       {out / 'samples'}\n"
          f"Next: gankit sample {out} -n 1000 --out samples.npz")


def _plot_names(folder: Path) -> str:
    """The plots a run has (toy and image runs draw different ones), or why there are none."""
    names = sorted(p.name for p in folder.glob("*") if p.is_file()) if folder.is_dir() else []
    return ", ".join(names) if names else "none yet: gankit plot RUN draws them"


# --------------------------------------------------------------------------- sample / plot

def cmd_sample(args: argparse.Namespace) -> None:
    from gankit.api import GAN
    from gankit.io import check_target, write_images, write_samples
    from gankit.models.noise import check_truncation

    check_truncation(args.truncation)
    out = Path(args.out)
    sampler = GAN.load(args.run, live=args.live).sampler
    check_target(out, sampler.is_image)
    if args.interpolate:
        if not sampler.is_image or out.suffix.lower() != ".png":
            raise UserError("--interpolate draws a .png grid of images: give an image run and --out x.png")
        rows = sampler.interpolate(args.interpolate, steps=10, seed=args.seed, label=args.label,
                                   truncation=args.truncation)
        write_images(rows, None, out, per_row=10)
        print(f"gankit: wrote {args.interpolate} latent interpolations to {out}", file=sys.stderr)
        return
    samples, labels = sampler.sample(args.n, seed=args.seed, label=args.label, raw=args.raw,
                                     truncation=args.truncation)
    if sampler.is_image:
        per_row = 10 if sampler.num_classes == 10 and args.label is None else 8
        write_images(samples, labels, out, per_row)
    else:
        write_samples(samples, out)
    print(f"gankit: wrote {len(samples)} samples to {out}", file=sys.stderr)


def cmd_export(args: argparse.Namespace) -> None:
    from gankit.api import GAN
    from gankit.export import export_generator

    out = Path(args.out)
    if out.suffix.lower() != ".pt2":
        raise UserError(f"--out '{out}' must end in .pt2 (a torch.export program)")
    export_generator(GAN.load(args.run).sampler, out)
    print(f"gankit: wrote the generator to {out}; load it with torch.export.load (see docs/guide.md)",
          file=sys.stderr)


def cmd_plot(args: argparse.Namespace) -> None:
    from gankit.viz.plots import plot_run

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.toml").is_file():
        raise UserError(f"'{run_dir}' is not a gankit run directory (no config.toml)")
    made = plot_run(run_dir)
    print(f"gankit: drew {len(made)} files under {run_dir / 'plots'} and {run_dir / 'samples'}")


def cmd_report(args: argparse.Namespace) -> None:
    from gankit.report import write_report

    for run in args.runs:
        if not Path(run).is_dir():
            raise UserError(f"'{run}' is not a folder; give run directories (those `gankit train` wrote)")
    page = write_report(args.runs, args.out)
    print(f"gankit: wrote {page} ({page.stat().st_size / 1e6:.1f} MB, self-contained: open it in any browser)")


def cmd_eval(args: argparse.Namespace) -> None:
    import json

    from gankit.metrics.evaluate import check_metrics, check_sample_count, default_metrics, evaluate
    from gankit.models.noise import check_truncation
    from gankit.training import Trainer
    from gankit.training.evaluation import how_drawn, sampling_target

    if not Path(args.run).exists():
        raise UserError(f"'{args.run}' does not exist; give a run directory or one of its checkpoints/*.pt files")
    check_truncation(args.truncation)
    bad = [s for s in args.set if not s.strip().startswith("data.")]
    if bad:
        raise UserError(f"--set '{bad[0]}': gankit eval only takes data.* settings (where the real data is)")
    check_sample_count(args.n)  # before the run loads: one line, nothing printed yet
    trainer = Trainer.resume(args.run, args.set)
    target = sampling_target(trainer, args.truncation, args.raw, args.live)
    names = [m.strip() for m in (args.metrics or "").split(",") if m.strip()] or default_metrics(target)
    check_metrics(names, target)
    print(f"gankit: evaluating {args.run} at step {trainer.step}: {', '.join(names)}", file=sys.stderr)
    scores = {**how_drawn(trainer, args.truncation), **evaluate(target, names, args.n, args.seed, progress=True)}
    if args.json:
        print(json.dumps(scores))
    else:
        width = max(len(k) for k in scores)
        for key, value in scores.items():
            print(f"{key:<{width}}  {value:.6g}" if isinstance(value, float) else f"{key:<{width}}  {value}")


# --------------------------------------------------------------------------- list / config

def cmd_list(args: argparse.Namespace) -> None:
    if args.kind == "presets":
        from gankit.presets import describe_presets

        rows = describe_presets()
    else:
        from gankit.data import DATASETS
        from gankit.losses import LOSSES
        from gankit.metrics.evaluate import METRICS
        from gankit.models import MODELS

        registries = {"datasets": DATASETS, "models": MODELS, "losses": LOSSES, "metrics": METRICS}
        rows = list(registries[args.kind].describe())
    width = max(len(name) for name, _ in rows)
    for name, text in rows:
        print(f"{name:<{width}}  {text}")


def cmd_config(args: argparse.Namespace) -> None:
    print(config_mod.dumps(resolve_config(args.preset, args.set)), end="")


# --------------------------------------------------------------------------- parser

LIVE_HELP = ("G as the last training step left it: not its EMA copy (train.ema_decay), "
             "nor through the rejection critic")
TRUNCATION_HELP = ("scale G's continuous noise by PSI (default 1: the noise G was trained on); "
                   "below 1, samples nearer the middle of what G draws: clearer, less varied")


def build_parser() -> Parser:
    parser = Parser(prog="gankit", description="Train, understand and evaluate GANs.")
    parser.add_argument("--version", action="version", version=f"gankit {__version__}")
    verbs = parser.add_subparsers(dest="verb", required=True, parser_class=Parser)
    _add_training_verbs(verbs)
    _add_sampling_verbs(verbs)
    _add_looking_verbs(verbs)
    return parser


def _add_training_verbs(verbs) -> None:
    train = verbs.add_parser("train", help="train a preset or a config file")
    train.add_argument("target", nargs="?", default="quadratic", help="preset name, CONFIG.toml, or your points as FILE.npy / FILE.csv "
                       "(the `points` preset; default: quadratic)")
    _add_set(train)
    train.add_argument("--out", help="run directory (default: runs/PRESET-DATE-TIME)")
    train.add_argument("--steps", type=int, help="total steps (one step: n_d D updates then n_g G updates)")
    train.add_argument("--max-minutes", type=float, metavar="M",
                       help="stop after M minutes of training, saving that step as the last (train.max_minutes)")
    train.add_argument("--seed", type=int)
    train.add_argument("--device", choices=["auto", "cpu", "cuda"])
    train.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    _add_run_flags(train)
    train.set_defaults(func=cmd_train)

    resume = verbs.add_parser("resume", help="continue a run exactly where it stopped")
    resume.add_argument("run", help="run directory (its latest checkpoint), or one of its checkpoints/step-*.pt")
    resume.add_argument("--steps", type=int, help="new total number of steps (default: the run's own)")
    resume.add_argument("--max-minutes", type=float, metavar="M",
                        help="a new time budget in minutes of training in all, resumes included (0: none)")
    resume.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change a setting that leaves training the same, e.g. data.root=PATH "
                             "(see docs/guide.md#resume)")
    _add_run_flags(resume)
    resume.set_defaults(func=cmd_resume)


def _add_sampling_verbs(verbs) -> None:
    sample = verbs.add_parser("sample", help="generate samples from a run or checkpoint")
    sample.add_argument("run", help="run directory or .pt checkpoint")
    sample.add_argument("-n", type=int, default=1000, help="number of samples (default 1000)")
    sample.add_argument("--out", required=True,
                        help="vectors: x.npz (key 'samples'), x.npy, x.csv, x.png (scatter); "
                             "images: x.npz (uint8 N,H,W,C), x.png (grid) or DIR (one PNG each)")
    sample.add_argument("--seed", type=int, default=0)
    sample.add_argument("--label", type=int, help="class to generate (conditional runs)")
    sample.add_argument("--raw", action="store_true",
                        help="every sample of G, even when the run fitted a rejection critic (train.drs_steps)")
    sample.add_argument("--live", action="store_true", help=LIVE_HELP)
    sample.add_argument("--truncation", type=float, default=1.0, metavar="PSI", help=TRUNCATION_HELP)
    sample.add_argument("--interpolate", type=int, metavar="ROWS",
                        help="image runs: ROWS latent interpolations of 10 steps each, as one .png grid")
    sample.set_defaults(func=cmd_sample)

    export = verbs.add_parser("export", help="save the generator alone (torch.export), to sample without gankit")
    export.add_argument("run", help="run directory or .pt checkpoint")
    export.add_argument("--out", required=True, help="generator.pt2")
    export.set_defaults(func=cmd_export)


def _add_looking_verbs(verbs) -> None:
    plot = verbs.add_parser("plot", help="(re)draw every plot of a run directory")
    plot.add_argument("run_dir")
    plot.set_defaults(func=cmd_plot)

    report = verbs.add_parser("report", help="one self-contained HTML page of a run, or of several side by side")
    report.add_argument("runs", nargs="+", metavar="RUN")
    report.add_argument("--out", help="the page (default: RUN/report.html for one run, report.html for several)")
    report.set_defaults(func=cmd_report)

    evaluate = verbs.add_parser("eval", help="score a run's generator with the metrics that fit its data")
    evaluate.add_argument("run", help="run directory or .pt checkpoint")
    evaluate.add_argument("--metrics", help="comma-separated names from `gankit list metrics` "
                                            "(default: those that fit the data)")
    evaluate.add_argument("-n", type=int, help="generated samples (default: 2,500 vectors, 10,000 images)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--raw", action="store_true",
                          help="score every sample of G, even when the run fitted a rejection critic")
    evaluate.add_argument("--live", action="store_true", help=LIVE_HELP)
    evaluate.add_argument("--truncation", type=float, default=1.0, metavar="PSI", help=TRUNCATION_HELP)
    _add_set(evaluate)
    evaluate.set_defaults(func=cmd_eval)

    lister = verbs.add_parser("list", help="list presets, datasets, models, losses or metrics")
    lister.add_argument("kind", choices=LIST_KINDS)
    lister.set_defaults(func=cmd_list)

    show = verbs.add_parser("config", help="print a preset's full TOML config")
    show.add_argument("preset")
    _add_set(show)
    show.set_defaults(func=cmd_config)


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.batch_size=128 (repeatable)")


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-plots", action="store_true", help="do not draw plots at the end")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as exc:
        print(f"gankit: error: {exc}", file=sys.stderr)
        return 2
    except TrainingError as exc:
        print(f"gankit: training stopped: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gankit: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # a folder the user cannot write to, a full disk, a file in the way
        print(f"gankit: error: {_os_error_line(exc)}", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:  # leave the process group, when torchrun started one
            from gankit.training.distributed import stop

            stop()
    return 0


def _os_error_line(exc: OSError) -> str:
    where = f"'{exc.filename}'" if exc.filename else "a file"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return (f"cannot write or read {where} ({reason}); check that the folder exists, that you may write "
            "to it (choose another --out otherwise) and that the disk has space")


def entry() -> None:
    """The console command: main(), then, in a process torchrun started, a hard exit. Interpreter
    shutdown can abort such a process while Gloo's threads are torn down around it (seen now and
    then on CPU runs, after all was written); by then the run is saved and the group left."""
    try:
        code = main()
    except SystemExit as exc:  # a stop signal's exit status, from the trainer
        code = exc.code if isinstance(exc.code, int) else 1
    if "torch.distributed" in sys.modules:  # imported by training; `gankit list` etc. stay light
        from gankit.training.distributed import launched_by_torchrun

        if launched_by_torchrun():
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    raise SystemExit(code)


if __name__ == "__main__":
    entry()
