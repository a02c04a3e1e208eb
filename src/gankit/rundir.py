"""Run directories: which folders are gankit runs, and one process at a time in each.

A folder is a run only when gankit marked it so: it holds `.gankit-run` (written when the run is
made), or, for runs made before the marker existed, both `config.toml` and `checkpoints/`. Nothing
else is ever removed by --overwrite or by `GAN.fit`.

A run is held by one process at a time through an OS lock on `RUN/.gankit-lock` (flock), which the
OS releases when the process ends, crash or kill included: no stale lock to clear by hand.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from gankit.errors import UserError
from gankit.io import atomic_write_text

try:  # POSIX; elsewhere runs are not locked (say so in the docs, not at every run)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

MARKER = ".gankit-run"
LOCK = ".gankit-lock"
# What a run holds: --overwrite removes exactly these and nothing else.
RUN_ENTRIES = ("config.toml", "metrics.jsonl", "checkpoints", "snapshots", "samples", "plots", "report.html",
               "data.npy")
MADE_BY_FIT = "GAN.fit"


def is_run(folder: Path) -> bool:
    folder = Path(folder)
    if (folder / MARKER).is_file():
        return True
    # a run of a gankit version before the marker: its config and a finished checkpoint
    return (folder / "config.toml").is_file() and (folder / "checkpoints" / "latest.pt").is_file()


def is_free(folder: Path) -> bool:
    """A folder gankit may start a run in: missing, empty (but for a lock file) or a run already."""
    folder = Path(folder)
    return not folder.exists() or (folder.is_dir() and (is_run(folder) or not _entries(folder)))


def _entries(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name != LOCK]


def refuse_foreign(folder: Path) -> None:
    """One line for a folder that gankit must not write into: a file, or a non-empty folder that is no run."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"--out '{folder}' is a file; give a directory path")
    if not is_free(folder):
        raise UserError(f"'{folder}' exists and is not a gankit run (no {MARKER} inside); gankit never writes "
                        "into other folders: choose a new or empty one")


def made_by(folder: Path) -> str | None:
    """Who made the run (`gankit train` or GAN.fit), as its marker says; None without a marker."""
    try:
        return json.loads((Path(folder) / MARKER).read_text(encoding="utf-8")).get("made_by")
    except (OSError, ValueError, AttributeError):
        return None


def mark_run(folder: Path, by: str) -> None:
    from gankit import __version__

    atomic_write_text(Path(folder) / MARKER, json.dumps({"made_by": by, "gankit_version": __version__}) + "\n")


def prepare_out_dir(out: Path, overwrite: bool, by: str = "gankit train") -> None:
    """Make `out` ready for a new run made `by` a command or GAN.fit. An existing run is replaced
    only with overwrite (GAN.fit: only a run GAN.fit made); any other non-empty folder is refused.
    The caller holds the run (hold_run) so no other process is using what is removed."""
    out = Path(out)
    refuse_foreign(out)
    entries = _entries(out) if out.is_dir() else []
    if entries and not overwrite:
        raise UserError(f"'{out}' already holds a run; continue it with `gankit resume {out}`, "
                        "or pass --overwrite to start again, or choose another --out")
    if entries and by == MADE_BY_FIT and made_by(out) != MADE_BY_FIT:
        raise UserError(f"'{out}' holds a run that GAN.fit did not make; fit replaces only its own runs: "
                        "choose another out= or remove that run yourself")
    out.mkdir(parents=True, exist_ok=True)
    mark_run(out, by)  # rewritten in place (atomically) before anything goes: the folder stays a run
    for name in RUN_ENTRIES:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


# --------------------------------------------------------------------------- one process a run

_held: dict[Path, list] = {}  # run -> [open lock file, depth]: this process's locks, re-entrant


@contextmanager
def hold_run(folder: Path) -> Iterator[None]:
    """Hold the run directory for this process (creating the folder if needed), or refuse with the
    process that holds it. Nested holds in one process are fine."""
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    refuse_foreign(folder)  # before the lock file: a folder that is not gankit's gets no file of ours
    folder.mkdir(parents=True, exist_ok=True)
    fh = open(folder / LOCK, "a+", encoding="utf-8")
    try:
        _lock(fh, folder)
    except BaseException:
        fh.close()
        raise
    _held[key] = [fh, 1]
    try:
        yield
    finally:
        del _held[key]
        fh.close()  # closing the file releases the lock


def _lock(fh, folder: Path) -> None:
    if fcntl is None:
        return
    try:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        raise UserError(f"'{folder}' is in use by {holder}; wait for it to finish (or stop it), "
                        "or choose another --out") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"process {os.getpid()} ({' '.join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))[:120]})")
    fh.flush()
