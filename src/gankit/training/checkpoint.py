"""Checkpoint files: atomic writes, safe reads, and the run directory's checkpoint folder.

A checkpoint is written to a temporary file, flushed to disk, then renamed over its final name,
so a crash leaves either the old file or the new one, never half of one. `latest.pt` is a hard
link to the newest complete checkpoint (a copy where the file system has no hard links).
Checkpoints are read with `weights_only=True`: a crafted file cannot run code. Each holds a
SHA-256 of its own contents (tensor bytes, keys and values), because the zip format torch uses is
not checked on read: a flipped byte in a weight would otherwise load silently.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from gankit.errors import UserError
from gankit.io import atomic_write, fsync_dir

FORMAT_VERSION = 1
EARLIER = ("; use an earlier checkpoints/step-*.pt of the run instead (gankit resume, sample and eval take "
           "one in place of the run directory)")
STEP_FILE = re.compile(r"step-(\d+)\.pt$")


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to `path` so that readers see the old file or the complete new one."""
    atomic_write(path, lambda fh: torch.save(obj, fh))


def point_latest(folder: Path, target: Path) -> None:
    """Make folder/latest.pt the same file as `target`, atomically: a hard link, or a copy flushed
    to disk where the file system has no hard links."""
    tmp = folder / ".latest.pt.tmp"
    tmp.unlink(missing_ok=True)
    try:
        os.link(target, tmp)
    except OSError:
        def copy(fh) -> None:
            with open(target, "rb") as src:
                shutil.copyfileobj(src, fh)

        atomic_write(folder / "latest.pt", copy)
        return
    os.replace(tmp, folder / "latest.pt")
    fsync_dir(folder)


def save_checkpoint(state: dict[str, Any], folder: Path, step: int, keep: int) -> Path:
    """Write step-NNNNNN.pt, point latest.pt at it, and keep only the newest `keep` step files."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{step:06d}.pt"
    payload = {"format": FORMAT_VERSION, **state}
    payload["checksum"] = content_digest(payload)
    atomic_save(payload, path)
    point_latest(folder, path)
    for old in step_files(folder)[:-keep]:
        old.unlink(missing_ok=True)
    return path


def content_digest(obj: Any) -> str:
    """SHA-256 over a nested structure of dicts, lists, tensors and plain values, in a fixed order."""
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: "hashlib._Hash", obj: Any) -> None:
    if isinstance(obj, dict):
        for key in sorted(obj, key=repr):
            if key != "checksum":
                h.update(repr(key).encode())
                _feed(h, obj[key])
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for item in obj:
            _feed(h, item)
        h.update(b"]")
    elif isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous().reshape(-1)
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    else:
        h.update(repr(obj).encode())


def step_of(file: Path) -> int:
    return int(STEP_FILE.search(file.name).group(1))


def step_files(folder: Path) -> list[Path]:
    """Step checkpoints, oldest first."""
    return sorted((p for p in folder.glob("step-*.pt") if STEP_FILE.search(p.name)), key=step_of)


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely; any damage becomes one clear UserError."""
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' does not exist")
    try:
        with warnings.catch_warnings():
            # Damaged bytes can make torch warn (e.g. about an odd pickle protocol) before it fails;
            # the user gets one line from us instead, and an intact file is proved by its checksum.
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - damaged bytes surface as almost any exception type
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint '{path}' is corrupt or not a gankit checkpoint ({reason[:100]}){EARLIER}")
    if not isinstance(state, dict) or "format" not in state:
        raise UserError(f"checkpoint '{path}' is not a gankit checkpoint")
    if state["format"] != FORMAT_VERSION:
        raise UserError(f"checkpoint '{path}' has format {state['format']}, this gankit reads format "
                        f"{FORMAT_VERSION}; use the gankit version that wrote it")
    if state.get("checksum") != content_digest(state):
        raise UserError(f"checkpoint '{path}' is corrupt (its contents do not match their checksum){EARLIER}")
    return state


def incompatible(path: Path, exc: Exception) -> UserError:
    """A checkpoint that reads fine but does not fit the networks its own config builds."""
    reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
    return UserError(f"checkpoint '{path}' does not match the networks of its config ({reason}); "
                     "was it written by another gankit version or edited?")


STATE_ERRORS = (KeyError, RuntimeError, TypeError, ValueError, IndexError)


def run_dir_of(path: str | Path, strict: bool = False) -> Path:
    """The run directory of a run directory or of one of its checkpoints/*.pt files. A checkpoint
    file elsewhere (copied out of its run) belongs to no run: its folder is given, unless strict
    (training must go on in the run the checkpoint came from)."""
    path = Path(path)
    if path.is_dir():
        return path
    if path.is_file() and path.suffix == ".pt" and path.parent.name == "checkpoints":
        return path.parent.parent
    if path.is_file() and not strict:
        return path.parent
    raise UserError(f"'{path}' is neither a run directory nor one of its checkpoints/step-*.pt files")


def find_checkpoint(path: str | Path) -> Path:
    """A run directory or a checkpoint file -> the checkpoint file to read."""
    path = Path(path)
    if path.is_dir():
        latest = path / "checkpoints" / "latest.pt"
        if latest.is_file():
            return latest
        raise UserError(f"'{path}' holds no checkpoints/latest.pt; is it a gankit run directory?")
    if path.is_file():
        return path
    raise UserError(f"'{path}' does not exist; give a run directory or a .pt checkpoint")
