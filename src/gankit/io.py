"""Writing to disk for users: run folders made safely, samples in the formats users ask for,
never a half-written file."""
from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np

from gankit.errors import UserError

VECTOR_FORMATS = (".npz", ".npy", ".csv", ".png")


def _new_file_mode() -> int:
    """0666 less the process's umask: the mode open() gives a new file. The umask can only be read
    by setting it, so it is read once, at import."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


NEW_FILE_MODE = _new_file_mode()


def cache_dir() -> Path:
    """Where gankit keeps what it can compute again (real images' features, this machine's precision
    probe): $GANKIT_CACHE, else ~/.cache/gankit."""
    return Path(os.environ.get("GANKIT_CACHE") or Path.home() / ".cache" / "gankit")


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Call write(fh) on a fresh temporary file beside `path`, flush it to disk, then rename it over
    `path`: readers (and a crash) see the old file or the complete new one, never half of one. The
    temporary name is unique, so two writers never write into one temporary file."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp makes the file private (0600): give it the old file's mode, or what open() would
        os.chmod(tmp, stat.S_IMODE(path.stat().st_mode) if path.exists() else NEW_FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (where the file system can sync a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot sync a directory; the rename is still atomic
    finally:
        os.close(fd)


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
