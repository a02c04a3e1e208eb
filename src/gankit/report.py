"""`gankit report RUN [RUN ...]`: a run (or several, side by side) as one self-contained HTML page.

One run: what was trained (preset, data, networks and their parameter counts, the full config), the
verdict (final evaluation, the data's own reference where gankit knows it, health warnings and
rollbacks), the curves (losses against their equilibrium values, D(x) and D(G(z)), evaluation
metrics over training), the samples over training behind a slider, the source article's pictures
for toy runs (GIFs of the scatter, D's feature layer, the decision surface, D against D*), and the
timings. Several runs: their curves overlaid, their final numbers and the config keys they differ
in, in one table.

Charts are Plotly figures (hover values, legend toggles, zoom) whose library is inlined once, and
pictures are inlined as base64, so the page makes no network request and opens from a USB stick.
With scripts off, the tables, the final samples and the article's pictures still show.
"""
from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gankit import config as config_mod
from gankit.config import RunConfig
from gankit.errors import UserError

# Measured in docs/benchmarks.md: two disjoint halves of the MNIST test set scored against each other.
MNIST_REFERENCE = {"fid": 0.07, "classifier_score": 9.27, "confident": 0.945, "precision": 0.885, "recall": 0.876}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


@dataclass
class RunRecord:
    """What a report needs of one run directory, read once."""

    run_dir: Path
    cfg: RunConfig
    rows: list[dict[str, Any]]
    parameters: dict[str, int] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def train_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if "d_loss" in r]

    @property
    def eval_rows(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r.get("eval")]

    @property
    def events(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if "event" in r]

    def final_scores(self) -> dict[str, Any]:
        last = self.eval_rows[-1] if self.eval_rows else {}
        return {k: v for k, v in last.items() if k not in ("eval", "eval_seconds", "n") and _is_number(v)}


def read_run(run_dir: Path) -> RunRecord:
    if not (run_dir / "config.toml").is_file() or not (run_dir / "metrics.jsonl").is_file():
        raise UserError(f"'{run_dir}' is not a gankit run directory (no config.toml and metrics.jsonl); "
                        "give the folder `gankit train` wrote")
    cfg = config_mod.load(run_dir / "config.toml")
    rows = []
    for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash: the others still tell the story
    return RunRecord(run_dir, cfg, rows, _parameter_counts(run_dir, cfg))


def _parameter_counts(run_dir: Path, cfg: RunConfig) -> dict[str, int]:
    """G's and D's parameter counts, from networks built as the run built them (the checkpoint says
    the data's shape); empty when the run has no checkpoint yet."""
    from gankit.training import checkpoint as ckpt
    from gankit.training.trainer import build_networks

    try:
        state = ckpt.load_checkpoint(ckpt.find_checkpoint(run_dir))
        g, d = build_networks(cfg, tuple(int(v) for v in state["data_shape"]), int(state["num_classes"]))
    except (UserError, KeyError, OSError):
        return {}
    return {"G": sum(p.numel() for p in g.parameters()), "D": sum(p.numel() for p in d.parameters())}


def write_report(run_dirs: list[str | Path], out: str | Path | None = None) -> Path:
    """Write the page; the default is RUN/report.html for one run, report.html here for several."""
    runs = [read_run(Path(r)) for r in run_dirs]
    if not runs:
        raise UserError("give at least one run directory")
    page = _single_page(runs[0]) if len(runs) == 1 else _comparison_page(runs)
    target = Path(out) if out else (runs[0].run_dir / "report.html" if len(runs) == 1 else Path("report.html"))
    from gankit.io import atomic_write_text

    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, page)
    return target


# --------------------------------------------------------------------------- one run

def _single_page(run: RunRecord) -> str:
    title = f"gankit report: {run.name}"
    body = [f"<h1>{_e(run.name)}</h1>", _summary(run), _verdict(run), _curves(run), _eval_curves(run),
            _samples(run), _article_pictures(run), _timings(run), _config_block(run)]
    return _page(title, "\n".join(b for b in body if b))


def _summary(run: RunRecord) -> str:
    c, last = run.cfg, (run.train_rows[-1] if run.train_rows else {})
    nets = ", ".join(f"{k} {v:,} parameters" for k, v in run.parameters.items()) or "no checkpoint yet"
    rows = [("preset", c.preset or "(a config file)"), ("data", c.data.name),
            ("networks", f"{c.model.name}: {nets}"), ("loss", c.loss.name),
            ("steps", f"{last.get('step', 0):,} of {c.train.steps:,}"),
            ("batch", c.train.batch_size), ("optimisers", f"G {c.optim_g.name} {c.optim_g.lr:g}, "
                                                          f"D {c.optim_d.name} {c.optim_d.lr:g}")]
    return "<h2>What was trained</h2>" + _table(["", ""], rows, header=False)


def _verdict(run: RunRecord) -> str:
    parts = ["<h2>Verdict</h2>"]
    scores = run.final_scores()
    if scores:
        reference = _reference(run)
        step = scores.pop("step", "?")
        rows = [(k, _fmt(v), _fmt(reference[k]) if k in reference else "") for k, v in scores.items()]
        parts.append(f"<p>Final evaluation (step {_fmt(step)}):</p>")
        parts.append(_table(["metric", "this run", "the data's own reference"], rows))
    else:
        parts.append("<p>No evaluation in this run: <code>gankit eval RUN</code> scores it, or train with "
                     "<code>--set eval.every=N</code>.</p>")
    warnings = [r for r in run.events if r.get("event") in ("warning", "rollback", "checkpoint_failed")]
    if warnings:
        parts.append(_table(["step", "health", "message"],
                            [(r.get("step"), r.get("kind", r["event"]), r.get("message", "")) for r in warnings]))
    else:
        parts.append("<p class='ok'>No health warnings and no rollbacks.</p>")
    return "\n".join(parts)


def _reference(run: RunRecord) -> dict[str, float]:
    if run.cfg.data.name in ("ring8", "grid25"):
        from gankit.metrics.toy import perfect_high_quality

        return {"high_quality": perfect_high_quality(), "modes": 8 if run.cfg.data.name == "ring8" else 25,
                "reverse_kl": 0.0, "mode_spread": 1.0}
    if run.cfg.data.name == "mnist":
        return MNIST_REFERENCE
    return {}


def _curves(run: RunRecord) -> str:
    rows = run.train_rows
    if not rows:
        return ""
    steps = [r["step"] for r in rows]
    losses = [_trace(steps, [r["d_loss"] for r in rows], "D loss", COLOURS[0]),
              _trace(steps, [r["g_loss"] for r in rows], "G loss", COLOURS[1])]
    lines = []
    if run.cfg.loss.name in ("ns", "minimax"):
        g_eq = math.log(2) if run.cfg.loss.name == "ns" else -math.log(2)
        lines = [(2 * math.log(2), "D at equilibrium: 2 ln 2"), (g_eq, f"G at equilibrium: {g_eq:.3f}")]
    parts = ["<h2>Training curves</h2>", _figure(losses, "losses", "step", "loss", lines)]
    judged = [("d_real", "D(x)"), ("d_fake", "D(G(z))")] if "d_real" in rows[-1] else \
        [("critic_real", "C(x)"), ("critic_fake", "C(G(z))")]
    traces = [_trace(steps, [r.get(k) for r in rows], label, COLOURS[i]) for i, (k, label) in enumerate(judged)]
    half = [(0.5, "a coin toss: D(x) = 1/2")] if judged[0][0] == "d_real" else []
    parts.append(_figure(traces, "what D says", "step", "mean output", half))
    return "\n".join(parts)


def _eval_curves(run: RunRecord) -> str:
    rows = run.eval_rows
    if len(rows) < 2:
        return ""
    names = [k for k in rows[-1] if _is_number(rows[-1][k]) and k not in ("step", "n", "eval_seconds")]
    figures = [_figure([_trace([r["step"] for r in rows if k in r], [r[k] for r in rows if k in r], k, COLOURS[0],
                               markers=True)], k, "step", k) for k in names]
    return "<h2>Evaluation over training</h2><div class='grid'>" + "".join(figures) + "</div>"


def _samples(run: RunRecord) -> str:
    """The fixed-noise samples (or scatters) of every snapshot behind a slider; the last without scripts."""
    frames = sorted((run.run_dir / "samples").glob("*-step-*.png"))
    if not frames:
        return ("<h2>Samples over training</h2><p>No sample pictures yet: <code>gankit plot RUN</code> draws "
                "them from the snapshots, then run the report again.</p>")
    steps = [int(f.stem.rsplit("-", 1)[1]) for f in frames]
    sources = [_data_uri(f) for f in frames]
    last = len(frames) - 1
    return (f"<h2>Samples over training</h2><p>Fixed noise (and fixed real points) at every snapshot: "
            f"<span id='sample-step'>step {steps[last]:,}</span></p>"
            f"<input type='range' id='sample-slider' min='0' max='{last}' value='{last}' class='script-only'>"
            f"<div><img id='sample-img' src='{sources[last]}' alt='samples at step {steps[last]}'></div>"
            f"<script>const sampleFrames = {_script_json(sources)}; const sampleSteps = {_script_json(steps)};"
            "const slider = document.getElementById('sample-slider');"
            "slider.addEventListener('input', () => {"
            "document.getElementById('sample-img').src = sampleFrames[slider.value];"
            "document.getElementById('sample-step').textContent = 'step ' + sampleSteps[slider.value].toLocaleString();"
            "});</script>")


def _article_pictures(run: RunRecord) -> str:
    gifs = sorted((run.run_dir / "plots").glob("*.gif"))
    gifs = [g for g in gifs if g.name != "samples.gif"]  # the slider shows those frames already
    if not gifs:
        return ""
    cells = "".join(f"<figure><img src='{_data_uri(g)}' alt='{_e(g.stem)}'><figcaption>{_e(g.stem)}</figcaption>"
                    "</figure>" for g in gifs)
    return "<h2>The article's pictures</h2><div class='grid'>" + cells + "</div>"


def _timings(run: RunRecord) -> str:
    rows = run.train_rows
    if not rows:
        return ""
    last = rows[-1]
    seconds = float(last.get("seconds", 0.0))
    items = [("training time", f"{seconds:,.1f} s"), ("steps per second", _fmt(last["step"] / max(seconds, 1e-9)))]
    if "images_per_s" in last:
        items.append(("images per second", _fmt(last["images_per_s"])))
    evals = sum(float(r.get("eval_seconds", 0.0)) for r in run.eval_rows)
    if evals:
        items.append(("evaluation time", f"{evals:,.1f} s"))
    return "<h2>Timings</h2>" + _table(["", ""], items, header=False)


def _config_block(run: RunRecord) -> str:
    text = config_mod.dumps(run.cfg)
    return f"<h2>Config</h2><details><summary>config.toml (re-runs this experiment)</summary><pre>{_e(text)}</pre></details>"


# --------------------------------------------------------------------------- several runs

def _comparison_page(runs: list[RunRecord]) -> str:
    names = _unique_names(runs)
    body = [f"<h1>{len(runs)} runs compared</h1>", _final_table(runs, names), _config_differences(runs, names)]
    for key, label in (("d_loss", "D loss"), ("g_loss", "G loss"), ("d_real", "D(x)"), ("d_fake", "D(G(z))")):
        traces = [_trace([r["step"] for r in run.train_rows if key in r], [r[key] for r in run.train_rows if key in r],
                         name, COLOURS[i % len(COLOURS)]) for i, (run, name) in enumerate(zip(runs, names))]
        if any(t["x"] for t in traces):
            body.append(_figure(traces, label, "step", label))
    metrics = sorted({k for run in runs for k in run.final_scores() if k not in ("step", "n")})
    for key in metrics:
        traces = [_trace([r["step"] for r in run.eval_rows if key in r], [r[key] for r in run.eval_rows if key in r],
                         name, COLOURS[i % len(COLOURS)], markers=True) for i, (run, name) in enumerate(zip(runs, names))]
        body.append(_figure(traces, key, "step", key))
    return _page(f"gankit report: {', '.join(names)}", "\n".join(body))


def _final_table(runs: list[RunRecord], names: list[str]) -> str:
    metrics = sorted({k for run in runs for k in run.final_scores() if k not in ("step", "n")})
    header = ["run", "steps", "training time", *metrics]
    rows = []
    for run, name in zip(runs, names):
        last, scores = (run.train_rows[-1] if run.train_rows else {}), run.final_scores()
        rows.append((name, last.get("step", 0), f"{float(last.get('seconds', 0)):,.0f} s",
                     *[_fmt(scores[m]) if m in scores else "" for m in metrics]))
    return "<h2>Final numbers</h2>" + _table(header, rows)


def _config_differences(runs: list[RunRecord], names: list[str]) -> str:
    flat = [_flatten(config_mod.to_dict(run.cfg)) for run in runs]
    keys = sorted({k for f in flat for k in f})
    differ = [k for k in keys if len({json.dumps(f.get(k)) for f in flat}) > 1]
    if not differ:
        return "<h2>Config differences</h2><p>The runs share one config.</p>"
    rows = [(k, *[_fmt(f.get(k, "")) for f in flat]) for k in differ]
    return "<h2>Config differences</h2>" + _table(["key", *names], rows)


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _unique_names(runs: list[RunRecord]) -> list[str]:
    names = [run.name for run in runs]
    if len(set(names)) == len(names):
        return names
    return [str(run.run_dir) for run in runs]


# --------------------------------------------------------------------------- HTML pieces

def _trace(x: list, y: list, name: str, colour: str, markers: bool = False) -> dict[str, Any]:
    return {"type": "scatter", "mode": "lines+markers" if markers else "lines", "x": x, "y": y, "name": name,
            "line": {"color": colour, "width": 1.5}}


_figure_count = 0


def _figure(traces: list[dict], title: str, x_label: str, y_label: str,
            lines: list[tuple[float, str]] | None = None) -> str:
    """A Plotly chart as a div and the call that draws it; dashed horizontal lines mark reference values."""
    global _figure_count
    _figure_count += 1
    div = f"fig{_figure_count}"
    shapes = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y,
               "line": {"dash": "dash", "color": "#555", "width": 1}} for y, _ in lines or []]
    notes = [{"xref": "paper", "x": 1, "y": y, "xanchor": "right", "yanchor": "bottom", "text": text,
              "showarrow": False, "font": {"size": 10, "color": "#555"}} for y, text in lines or []]
    layout = {"title": {"text": title, "x": 0.01, "xanchor": "left"}, "modebar": {"orientation": "v"}, "xaxis": {"title": {"text": x_label}}, "yaxis": {"title": {"text": y_label}},
              "shapes": shapes, "annotations": notes, "height": 320, "margin": {"l": 60, "r": 20, "t": 40, "b": 45},
              "legend": {"orientation": "h"}}
    data = _script_json(traces)
    return (f"<div class='figure' id='{div}'><noscript>{_e(title)}: chart needs scripts; the numbers are in "
            f"metrics.jsonl</noscript></div><script>Plotly.newPlot('{div}', {data}, {_script_json(layout)}, "
            "{responsive: true, displaylogo: false});</script>")


def _script_json(value: Any) -> str:
    """JSON safe inside <script>: a run named '</script>' cannot end the script early."""
    return json.dumps(value, default=_json_number).replace("</", "<\\/")


def _json_number(value: Any) -> Any:
    return None if value is None else float(value)


def _page(title: str, body: str) -> str:
    from plotly.offline import get_plotlyjs

    style = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:0.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:left}th{background:#f2f2f2}.ok{color:#276b27}.grid{display:grid;"
             "grid-template-columns:repeat(auto-fill,minmax(330px,1fr));gap:10px}img{max-width:100%}"
             "figure{margin:0}pre{background:#f7f7f7;padding:1em;overflow:auto}"
             ".figure{min-height:320px}.wide{overflow-x:auto}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
            f"<style>{style}</style><noscript><style>.script-only{{display:none}}.figure{{min-height:0}}"
            f"</style></noscript><script>{get_plotlyjs()}</script></head><body>{body}"
            "<p><small>Written by gankit report; self-contained: no network needed.</small></p></body></html>")


def _table(columns: list[str], rows: list[tuple], header: bool = True) -> str:
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in columns) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{_e(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<div class='wide'><table>{head}{body}</table></div>"  # wide tables scroll, the page does not


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}"


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _e(text: Any) -> str:
    return html.escape(str(text))


def _data_uri(path: Path) -> str:
    kind = {"png": "image/png", "gif": "image/gif", "svg": "image/svg+xml"}[path.suffix.lstrip(".").lower()]
    return f"data:{kind};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
