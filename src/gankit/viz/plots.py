"""The article's pictures, drawn from a run directory alone (no training code, no networks).

Image runs: samples/real.png (real images), samples/grid-step-N.png (fixed noise; one row per
class for conditional runs) and plots/samples.gif. Vector runs:

- plots/losses.png: D and G loss with the equilibrium values, and D(x), D(G(z)) against 1/2.
- samples/scatter-step-N.png and plots/scatter.gif: real vs generated points over training.
- plots/features/{d,g}-update-step-N.png and GIFs: D's feature-layer view of real and generated
  points before and after the D update, and before and after the G update, with centroids.
- plots/surface/step-N.png and plots/surface.gif: sigmoid D over the data plane, with the points.

With periodic evaluation (eval.every): plots/eval.png, every metric over training; on 2-D data of
known density, plots/probability/step-N.png and plots/probability.gif: the trained sigmoid D beside
the optimal D* = p_data / (p_data + p_g), and the JSD and V(D, G) curves against their optimum.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from gankit import config as config_mod  # noqa: E402

REAL, FAKE, FAKE_OLD = "#1f77b4", "#d62728", "#ff9896"
FIGSIZE_PAIR = (11, 5)
DPI = 90


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a crash: skip it, the rest of the log is still good
    return rows


def equilibrium(loss_name: str) -> tuple[float | None, float | None]:
    """D and G loss at the theoretical optimum D = 1/2, where the loss defines one."""
    if loss_name == "ns":
        return 2 * math.log(2), math.log(2)
    if loss_name == "minimax":
        return 2 * math.log(2), -math.log(2)
    if loss_name == "lsgan":
        return 0.25, 0.125  # D outputs 1/2 on both: 1/2*(1/4) + 1/2*(1/4); G: 1/2*(1/4)
    return None, None


def plot_losses(run_dir: Path, loss_name: str) -> Path | None:
    logged = read_metrics(run_dir)
    rows = [r for r in logged if "d_loss" in r]
    if not rows:
        return None
    step = np.array([r["step"] for r in rows])
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True, constrained_layout=True)
    top.plot(step, [r["d_loss"] for r in rows], color=REAL, lw=1, label="D loss")
    top.plot(step, [r["g_loss"] for r in rows], color=FAKE, lw=1, label="G loss")
    d_eq, g_eq = equilibrium(loss_name)
    if d_eq is not None:
        top.axhline(d_eq, color=REAL, ls="--", lw=1, label=f"D at equilibrium ({d_eq:.3f})")
        top.axhline(g_eq, color=FAKE, ls="--", lw=1, label=f"G at equilibrium ({g_eq:.3f})")
    top.set_ylabel(f"loss ({loss_name})")
    top.set_title("Losses: at equilibrium D cannot tell real from generated")
    top.legend(loc="upper right", fontsize=8)
    _plot_judgements(bottom, step, rows, judges_probability(loss_name))
    bottom.set_xlabel("step (n_d D updates + n_g G updates)")
    bottom.legend(loc="upper right", fontsize=8)
    _mark_events(bottom, [r for r in logged if "event" in r and r["event"] != "precision"])  # not a turn of training
    return _save(fig, run_dir / "plots" / "losses.png")


def judges_probability(loss_name: str) -> bool:
    """Whether sigmoid D is a probability of "real" (D trained by cross-entropy), not a critic's value."""
    from gankit.losses import LOSSES

    return LOSSES.get(loss_name).probabilistic


def _plot_judgements(ax, step: np.ndarray, rows: list[dict], probabilistic: bool) -> None:
    """Mean D(x) and D(G(z)): probabilities for the cross-entropy losses, a critic's raw values else
    (runs of earlier versions logged sigmoid of a critic as d_real: not drawn as a probability)."""
    if probabilistic:
        ax.plot(step, [r.get("d_real", np.nan) for r in rows], color=REAL, lw=1, label="mean D(x), real")
        ax.plot(step, [r.get("d_fake", np.nan) for r in rows], color=FAKE, lw=1, label="mean D(G(z)), generated")
        ax.axhline(0.5, color="gray", ls="--", lw=1, label="1/2: D is guessing")
        ax.set_ylim(-0.02, 1.02)
        ax.set_ylabel("sigmoid D = P(real)")
    else:
        ax.plot(step, [r.get("critic_real", np.nan) for r in rows], color=REAL, lw=1, label="mean critic C(x), real")
        ax.plot(step, [r.get("critic_fake", np.nan) for r in rows], color=FAKE, lw=1,
                label="mean C(G(z)), generated")
        ax.set_ylabel("critic value (raw, not a probability)")


def _mark_events(ax, events: list[dict]) -> None:
    """Rollbacks and health warnings as labelled vertical lines."""
    for event in events:
        ax.axvline(event["step"], color="black", ls=":", lw=1)
        ax.text(event["step"], 0.02, f" {event.get('kind', event['event'])}", rotation=90, fontsize=7,
                va="bottom", ha="left", transform=ax.get_xaxis_transform())  # y in axes units: any scale


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _as_2d(*arrays: np.ndarray) -> tuple[list[np.ndarray], tuple[str, str]]:
    """Show feature vectors in 2-D: as they are, padded (1-D), or by PCA (more than 2-D)."""
    dim = arrays[0].shape[1]
    if dim == 2:
        return list(arrays), ("feature 1", "feature 2")
    if dim == 1:
        return [np.concatenate([a, np.zeros_like(a)], 1) for a in arrays], ("feature", "")
    stacked = np.concatenate(arrays)
    mean = stacked.mean(0)
    _, _, vt = np.linalg.svd(stacked - mean, full_matrices=False)
    return [(a - mean) @ vt[:2].T for a in arrays], ("principal component 1", "principal component 2")


def _points(ax, real: np.ndarray, fake: np.ndarray, fake_label: str = "generated", fake_color: str = FAKE,
            centroids: bool = True) -> None:
    ax.scatter(real[:, 0], real[:, 1], s=6, c=REAL, alpha=0.5, label="real", linewidths=0)
    ax.scatter(fake[:, 0], fake[:, 1], s=6, c=fake_color, alpha=0.5, label=fake_label, linewidths=0)
    if centroids:
        for pts, color, name in ((real, REAL, "real"), (fake, fake_color, fake_label)):
            c = pts.mean(0)
            ax.scatter(*c, s=160, marker="X", c=color, edgecolors="black", linewidths=1.2,
                       label=f"centroid, {name}", zorder=5)


def plot_feature_pair(snap: dict, step: int, which: str, path: Path) -> Path:
    """Before/after the D update (G fixed) or before/after the G update (D fixed)."""
    if which == "d":
        keys = [("feat_real_d0", "feat_fake_d0_g0"), ("feat_real_d1", "feat_fake_d1_g0")]
        titles = ["before the D update", "after the D update"]
        story = "D update: D learns to pull real and generated points apart (G fixed)"
    else:
        keys = [("feat_real_d1", "feat_fake_d1_g0"), ("feat_real_d1", "feat_fake_d1_g1")]
        titles = ["before the G update", "after the G update"]
        story = "G update: G moves its points towards the real ones in D's eyes (D fixed)"
    flat, (xl, yl) = _as_2d(*[snap[k] for pair in keys for k in pair])
    fig, axes = plt.subplots(1, 2, figsize=FIGSIZE_PAIR, sharex=True, sharey=True, constrained_layout=True)
    for ax, (real, fake), title in zip(axes, (flat[:2], flat[2:]), titles):
        _points(ax, real, fake)
        ax.set_title(title)
        ax.set_xlabel(xl)
    if which == "g":
        old, new = flat[1].mean(0), flat[3].mean(0)
        axes[1].annotate("", xy=new, xytext=old, arrowprops={"arrowstyle": "->", "color": "black", "lw": 1.5})
        axes[1].scatter(*old, s=120, marker="X", c=FAKE_OLD, edgecolors="black", label="generated centroid before")
    axes[0].set_ylabel(yl)
    axes[1].legend(loc="best", fontsize=7)
    fig.suptitle(f"D's feature layer, step {step}. {story}", fontsize=10)
    return _save(fig, path)


def _plane(points: np.ndarray) -> np.ndarray:
    """The first two coordinates; one-dimensional data on the line y = 0."""
    return points[:, :2] if points.shape[1] >= 2 else np.concatenate([points, np.zeros_like(points)], 1)


def plot_scatter(real: np.ndarray, fake: np.ndarray, step: int, path: Path, limits=None) -> Path:
    fig, ax = plt.subplots(figsize=(6.5, 5.5), constrained_layout=True)
    _points(ax, _plane(real), _plane(fake), centroids=False)
    if limits is not None:
        ax.set_xlim(*limits[0])
        ax.set_ylim(*limits[1])
    names = {1: ("x", ""), 2: ("x", "y")}.get(real.shape[1], ("coordinate 1", "coordinate 2"))
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"Real vs generated points, step {step}")
    ax.legend(loc="upper center", fontsize=8, markerscale=3)
    return _save(fig, path)


def plot_surface(snap: dict, step: int, path: Path, probabilistic: bool = True) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 5.5), constrained_layout=True)
    mesh = ax.pcolormesh(snap["grid_x"], snap["grid_y"], snap["grid_d"], cmap="RdBu_r", vmin=0, vmax=1,
                         shading="auto")
    fig.colorbar(mesh, ax=ax, label="sigmoid D(x) = P(real)" if probabilistic else
                 "sigmoid of the critic's value (not a probability)")
    ax.contour(snap["grid_x"], snap["grid_y"], snap["grid_d"], levels=[0.5], colors="black", linewidths=1)
    ax.scatter(snap["real"][:, 0], snap["real"][:, 1], s=5, c="white", edgecolors=REAL, linewidths=0.4,
               label="real")
    ax.scatter(snap["fake_g1"][:, 0], snap["fake_g1"][:, 1], s=5, c="black", linewidths=0, label="generated")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title(f"D's decision surface, step {step} (black line: D = 1/2)")
    ax.legend(loc="upper center", fontsize=8, markerscale=3)
    return _save(fig, path)


# --------------------------------------------------------------------------- evaluation

SKIP_IN_EVAL_PLOT = {"step", "eval", "n", "eval_seconds", "kde_bandwidth", "mmd_bandwidth", "drs"}
# the probability view scores D and the live G, which the rejection critic leaves as they were
GAME_KEYS = {"jsd", "value_d", "value_d_star", "d_star_error"}


def plot_eval(run_dir: Path) -> Path | None:
    """Every logged metric over training, one small panel each; the probability view's values are
    drawn against their theoretical optimum (JSD 0, V = -log 4)."""
    scored = [r for r in read_metrics(run_dir) if r.get("eval")]
    rows = [r for r in scored if not r.get("drs")]
    critic_rows = [r for r in scored if r.get("drs")]  # the sampler once the rejection critic is fitted
    if not rows:
        return None
    keys = [k for k in rows[-1] if k not in SKIP_IN_EVAL_PLOT and not k.endswith("_std")
            and isinstance(rows[-1][k], (int, float)) and k != "value_d_star"]
    cols = min(3, len(keys))
    nrows = -(-len(keys) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.0 * nrows), squeeze=False, constrained_layout=True)
    for ax, key in zip(axes.ravel(), keys):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        if not pts:
            continue
        ax.plot(*zip(*pts), marker="o", ms=3, lw=1, color=FAKE, label=key)
        kept = [(r["step"], r[key]) for r in critic_rows if r.get(key) is not None]
        if kept and key not in GAME_KEYS:
            ax.plot(*zip(*kept), marker="*", ms=10, ls="none", color="black", label="with the rejection critic")
        if key == "jsd":
            ax.axhline(math.log(2), color="gray", ls=":", lw=1, label="log 2: no overlap")
            ax.axhline(0, color="black", ls="--", lw=1, label="0: p_g = p_data")
        if key == "value_d":
            star = [(r["step"], r["value_d_star"]) for r in rows if r.get("value_d_star") is not None]
            ax.plot(*zip(*star), marker="s", ms=3, lw=1, color=REAL, label="V(D*, G) = -log 4 + 2 JSD")
            ax.axhline(-math.log(4), color="black", ls="--", lw=1, label="-log 4: the optimum")
            ax.set_title("V(D, G), trained D", fontsize=9)
        else:
            ax.set_title(key, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes.ravel()[len(keys):]:
        ax.axis("off")
    fig.suptitle("Evaluation during training", fontsize=10)
    return _save(fig, run_dir / "plots" / "eval.png")


def plot_probability(snap: dict, step: int, scores: dict, path: Path) -> Path:
    """Left: p_data (shaded) and generated points. Middle: trained sigmoid D. Right: D* for this G.
    Grey where neither density has mass (D* = 0/0 there, and D is never trained there)."""
    xs, ys = snap["prob_x"], snap["prob_y"]
    lpd, lpg = snap["log_p_data"], snap["log_p_g"]
    pooled = np.logaddexp(lpd, lpg)
    empty = pooled < pooled.max() - np.log(1e4)
    has_d = "d_model" in snap
    fig, axes = plt.subplots(1, 3 if has_d else 2, figsize=(15 if has_d else 10, 4.6), constrained_layout=True)
    ax = axes[0]
    ax.pcolormesh(xs, ys, np.exp(lpd - lpd.max()), cmap="Blues", shading="auto", vmin=0, vmax=1)
    ax.contour(xs, ys, np.exp(lpg - lpg.max()), levels=[0.05, 0.3], colors=FAKE, linewidths=0.8)
    ax.scatter(snap["fake"][:, 0], snap["fake"][:, 1], s=2, c=FAKE, alpha=0.4, linewidths=0)
    ax.set_title("p_data (blue) and p_g (red: samples, KDE contours)", fontsize=9)
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="#d9d9d9")
    panels = ([("d_model", "trained D: sigmoid D(x)")] if has_d else []) + [("d_star", "optimal D* = p_data / (p_data + p_g)")]
    for ax, (key, title) in zip(axes[1:], panels):
        mesh = ax.pcolormesh(xs, ys, np.ma.masked_where(empty, snap[key]), cmap=cmap, vmin=0, vmax=1, shading="auto")
        ax.set_title(title, fontsize=9)
    fig.colorbar(mesh, ax=axes[1:].tolist(), label="P(real); grey: no mass under either density")
    for ax in axes:
        ax.set_xlabel("x")
        ax.set_aspect("equal", adjustable="box")
    axes[0].set_ylabel("y")
    facts = [f"step {step}"]
    if scores.get("jsd") is not None:
        facts.append(f"JSD(p_data || p_g) ~ {scores['jsd']:.3f} nats (0 = same, log 2 = {math.log(2):.3f} = disjoint)")
    if scores.get("d_star_error") is not None:
        facts.append(f"mean |D - D*| = {scores['d_star_error']:.3f}")
    fig.suptitle("The probability view: " + "; ".join(facts), fontsize=10)
    return _save(fig, path)


def _plot_probability_snapshots(run_dir: Path) -> list[Path]:
    scores = {r["step"]: r for r in read_metrics(run_dir) if r.get("eval")}
    frames = []
    for file in sorted((run_dir / "snapshots").glob("prob-step-*.npz")):
        try:
            with np.load(file, allow_pickle=False) as data:
                snap = {k: data[k] for k in data.files}
        except (OSError, ValueError):
            continue
        step = int(snap["step"])
        frames.append(plot_probability(snap, step, scores.get(step, {}),
                                       run_dir / "plots" / "probability" / f"step-{step:06d}.png"))
    gif = make_gif(frames, run_dir / "plots" / "probability.gif", ms_per_frame=900)
    return frames + ([gif] if gif else [])


def make_gif(frames: list[Path], path: Path, ms_per_frame: int = 700) -> Path | None:
    if not frames:
        return None
    images = [Image.open(f).convert("RGB") for f in frames]
    size = images[0].size
    images = [im if im.size == size else im.resize(size) for im in images]
    images[0].save(path, save_all=True, append_images=images[1:], duration=ms_per_frame, loop=0)
    return path


def load_snapshots(run_dir: Path) -> list[tuple[int, dict]]:
    snaps = []
    for file in sorted((run_dir / "snapshots").glob("step-*.npz")):
        try:
            with np.load(file, allow_pickle=False) as data:
                snaps.append((int(data["step"]), {k: data[k] for k in data.files}))
        except (OSError, ValueError, KeyError):
            continue  # a snapshot cut by a crash is skipped; the others still draw
    return sorted(snaps, key=lambda s: s[0])


def _scatter_limits(snaps: list[tuple[int, dict]]):
    """One frame for every scatter, so the GIF does not jump."""
    pts = np.concatenate([np.concatenate([_plane(s["real"]), _plane(s["fake_g1"])]) for _, s in snaps])
    low, high = np.percentile(pts, 0.5, axis=0), np.percentile(pts, 99.5, axis=0)
    real = np.concatenate([_plane(s["real"]) for _, s in snaps])
    low, high = np.minimum(low, real.min(0)), np.maximum(high, real.max(0))
    pad = 0.08 * (high - low) + 1e-6
    return (low[0] - pad[0], high[0] + pad[0]), (low[1] - pad[1], high[1] + pad[1])


def image_grid(images: np.ndarray, per_row: int = 8, pad: int = 2) -> np.ndarray:
    """uint8 (N, C, H, W) or (N, H, W, C) -> one uint8 (rows*H, per_row*W, C) picture with a grey border."""
    if images.shape[1] in (1, 3) and images.shape[-1] not in (1, 3):
        images = images.transpose(0, 2, 3, 1)
    n, h, w, c = images.shape
    rows = -(-n // per_row)
    grid = np.full((rows * (h + pad) + pad, per_row * (w + pad) + pad, c), 128, dtype=np.uint8)
    for i, im in enumerate(images):
        r, col = divmod(i, per_row)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = im
    return grid


def save_grid(images: np.ndarray, path: Path, per_row: int = 8, min_side: int = 480) -> Path:
    """A grid PNG, enlarged with sharp pixels so small images (28x28) stay readable."""
    grid = image_grid(images, per_row)
    im = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
    scale = max(1, -(-min_side // max(im.size)))  # round up: small grids always get enlarged
    if scale > 1:
        im = im.resize((im.size[0] * scale, im.size[1] * scale), Image.Resampling.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    im.save(path)
    return path


def _plot_image_snapshots(run_dir: Path, snaps: list[tuple[int, dict]]) -> list[Path]:
    samples = run_dir / "samples"
    first = snaps[0][1]
    made = [save_grid(first["real"], samples / "real.png")]
    frames = [save_grid(snap["images"], samples / f"grid-step-{step:06d}.png") for step, snap in snaps]
    gif = make_gif(frames, run_dir / "plots" / "samples.gif")
    return made + frames + ([gif] if gif else [])


def plot_run(run_dir: str | Path) -> list[Path]:
    """(Re)draw every picture of a run directory; returns the files written."""
    run_dir = Path(run_dir)
    cfg = config_mod.load(run_dir / "config.toml")
    made = [plot_losses(run_dir, cfg.loss.name)]
    snaps = load_snapshots(run_dir)
    if snaps and "images" in snaps[0][1]:
        made += _plot_image_snapshots(run_dir, snaps)
    elif snaps:
        made += _plot_snapshots(run_dir, snaps, judges_probability(cfg.loss.name))
    made += [plot_eval(run_dir)] + _plot_probability_snapshots(run_dir)
    return [p for p in made if p is not None]


def _plot_snapshots(run_dir: Path, snaps: list[tuple[int, dict]], probabilistic: bool = True) -> list[Path]:
    plots, samples = run_dir / "plots", run_dir / "samples"
    limits = _scatter_limits(snaps)
    frames: dict[str, list[Path]] = {"scatter": [], "features-d-update": [], "features-g-update": [], "surface": []}
    for step, snap in snaps:
        frames["scatter"].append(plot_scatter(snap["real"], snap["fake_g1"], step,
                                              samples / f"scatter-step-{step:06d}.png", limits))
        frames["features-d-update"].append(
            plot_feature_pair(snap, step, "d", plots / "features" / f"d-update-step-{step:06d}.png"))
        frames["features-g-update"].append(
            plot_feature_pair(snap, step, "g", plots / "features" / f"g-update-step-{step:06d}.png"))
        if "grid_d" in snap:
            frames["surface"].append(plot_surface(snap, step, plots / "surface" / f"step-{step:06d}.png",
                                                  probabilistic))
    gifs = [make_gif(files, plots / f"{name}.gif") for name, files in frames.items()]
    return [f for files in frames.values() for f in files] + [g for g in gifs if g is not None]
