"""Writing generated samples to the formats users ask for, without leaving half-written files."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np


def write_samples(samples: np.ndarray, out: Path) -> Path:
    """.npz (key `samples`), .npy, .csv (header x0,x1,...) or .png (a scatter of the first two coordinates)."""
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
