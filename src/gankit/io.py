"""Writing to disk for users: run folders made safely, samples in the formats users ask for,
never a half-written file."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from gankit.errors import UserError

VECTOR_FORMATS = (".npz", ".npy", ".csv", ".png")
RUN_ENTRIES = ("config.toml", "metrics.jsonl", "checkpoints", "snapshots", "samples", "plots", "report.html")


def prepare_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse to mix two runs in one folder; with --overwrite remove only gankit's own entries."""
    if not out.exists():
        return
    if not out.is_dir():
        raise UserError(f"--out '{out}' is a file; give a directory path")
    entries = [p.name for p in out.iterdir()]
    is_run = any(name in RUN_ENTRIES for name in entries)
    if is_run and not overwrite:
        raise UserError(f"'{out}' already holds a run; continue it with `gankit resume {out}`, "
                        "or pass --overwrite to start again, or choose another --out")
    if not is_run and entries:
        raise UserError(f"'{out}' exists and is not empty; choose another --out")
    for name in RUN_ENTRIES + ("data.npy",):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def check_target(out: Path, is_image: bool) -> None:
    """Refuse an output path the samples cannot be written to, before any work is done."""
    if is_image:
        if out.suffix and out.suffix.lower() not in (".npz", ".png"):
            raise UserError(f"--out '{out}' must be x.npz (uint8 images), x.png (one grid) or a directory "
                            "(one PNG per image)")
    elif out.suffix.lower() not in VECTOR_FORMATS:
        raise UserError(f"--out '{out}' must end in .npz, .npy, .csv or .png")


def write_images(images: np.ndarray, labels: np.ndarray | None, out: Path, per_row: int = 8) -> Path:
    """uint8 (N, H, W, C) images: x.npz (keys samples[, labels]), x.png (one grid) or DIR/ (one PNG each)."""
    from PIL import Image

    from gankit.viz.plots import save_grid

    if out.suffix.lower() == ".npz":
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.stem}.tmp.npz")
        np.savez_compressed(tmp, samples=images, **({"labels": labels} if labels is not None else {}))
        os.replace(tmp, out)
    elif out.suffix.lower() == ".png":
        tmp = save_grid(images, out.with_name(f".{out.stem}.tmp.png"), per_row)
        os.replace(tmp, out)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            name = f"{i:05d}" + (f"-class{labels[i]}" if labels is not None else "") + ".png"
            Image.fromarray(im[..., 0] if im.shape[-1] == 1 else im).save(out / name)
    return out


def write_samples(samples: np.ndarray, out: Path) -> Path:
    """Vectors: .npz (key `samples`), .npy, .csv (header x0,x1,...) or .png (a scatter of the first two
    coordinates)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    tmp = out.with_name(f".{out.stem}.tmp{suffix}")
    try:
        if suffix == ".npz":
            np.savez(tmp, samples=samples.astype(np.float32))
        elif suffix == ".npy":
            np.save(tmp, samples.astype(np.float32))
        elif suffix == ".csv":
            header = ",".join(f"x{i}" for i in range(samples.shape[1]))
            np.savetxt(tmp, samples, delimiter=",", header=header, comments="", fmt="%.7g")
        else:
            _scatter_png(samples, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def _scatter_png(samples: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), constrained_layout=True)
    y = samples[:, 1] if samples.shape[1] > 1 else np.zeros(len(samples))
    ax.scatter(samples[:, 0], y, s=4, alpha=0.6, c="#d62728", linewidths=0)
    ax.set_xlabel("x" if samples.shape[1] == 2 else "coordinate 1")
    ax.set_ylabel("y" if samples.shape[1] == 2 else "coordinate 2")
    ax.set_title(f"{len(samples)} generated samples")
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)
