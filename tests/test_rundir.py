"""Run directories: only gankit's own runs are replaced, one process holds a run, files are replaced
whole, and a folder the user cannot write to is one clear line."""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import gankit
from gankit import io as gio
from gankit.cli import main
from gankit.errors import UserError
from gankit.rundir import LOCK, MARKER, hold_run
from tests.conftest import TINY, digest

SETS = [arg for item in TINY for arg in ("--set", item)]
X = np.random.default_rng(0).normal(size=(200, 2)).astype(np.float32)


def succeeds(argv: list[str], capsys) -> None:
    assert main([*argv, "--no-plots", "--quiet"]) == 0
    capsys.readouterr()


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("gankit: error:"), err
    return err[0]


def test_a_users_folder_is_never_emptied(tmp_path, capsys):
    results = tmp_path / "results"
    (results / "plots").mkdir(parents=True)
    (results / "plots" / "mine.png").write_bytes(b"the user's own figure")
    before = digest(results, skip_lock=False)
    with pytest.raises(UserError, match="not a gankit run"):
        gankit.GAN("quadratic", settings={"train.steps": 5}, out=results).fit(X)
    for argv in (["train", *SETS, "--out", str(results), "--overwrite"], ["resume", str(results)]):
        assert main([*argv, "--no-plots", "--quiet"]) == 2
        assert "not a gankit run" in one_error_line(capsys)
    assert digest(results, skip_lock=False) == before  # not even a lock file was added


def test_fit_replaces_only_a_run_it_made(tmp_path, capsys):
    out = tmp_path / "nb"
    gan = gankit.GAN("quadratic", settings={"train.steps": 5, "train.drs_steps": 0}, out=out)
    gan.fit(X).fit(X)  # a notebook cell run twice: the second replaces the first
    assert (out / MARKER).is_file() and (out / "checkpoints" / "latest.pt").is_file()
    cli_run = tmp_path / "cli"
    succeeds(["train", *SETS, "--out", str(cli_run)], capsys)
    before = digest(cli_run)
    with pytest.raises(UserError, match="GAN.fit did not make"):
        gankit.GAN("quadratic", settings={"train.steps": 5}, out=cli_run).fit(X)
    assert digest(cli_run) == before


def test_runs_made_before_the_marker_still_count_as_runs(tmp_path, capsys):
    out = tmp_path / "old"
    succeeds(["train", *SETS, "--out", str(out)], capsys)
    (out / MARKER).unlink()  # as a run of an earlier gankit version
    assert main(["train", *SETS, "--out", str(out), "--no-plots", "--quiet"]) == 2
    assert "already holds a run" in one_error_line(capsys)
    assert main(["train", *SETS, "--out", str(out), "--overwrite", "--no-plots", "--quiet"]) == 0


@contextmanager
def held_by_another_process(run_dir: Path):
    code = ("import sys, time; from gankit.rundir import hold_run\n"
            "with hold_run(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)")
    child = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_one_process_at_a_time_in_a_run(tmp_path, capsys):
    out = tmp_path / "run"
    succeeds(["train", *SETS, "--out", str(out)], capsys)
    before = digest(out)
    with held_by_another_process(out) as pid:
        for argv in (["train", *SETS, "--out", str(out), "--overwrite"], ["resume", str(out), "--steps", "30"]):
            assert main([*argv, "--no-plots", "--quiet"]) == 2
            assert f"in use by process {pid}" in one_error_line(capsys)
        with pytest.raises(UserError, match=f"process {pid}"):
            with hold_run(out):
                pass
        assert digest(out) == before  # --overwrite removed nothing of the held run
    # the holder is gone (a crash or a kill releases the lock too): the run is free again
    assert main(["resume", str(out), "--steps", "30", "--no-plots", "--quiet"]) == 0


def test_metrics_are_replaced_whole_or_not_at_all(tiny_cfg, tmp_path, monkeypatch):
    """A kill between writing the trimmed log and renaming it leaves the old log, complete."""
    from gankit.training import Trainer

    Trainer(tiny_cfg, tmp_path).fit(progress=False)
    log = (tmp_path / "metrics.jsonl").read_text()
    resumed = Trainer.resume(tmp_path / "checkpoints" / "step-000010.pt")

    real_replace = os.replace

    def killed_before_the_log_is_renamed(src, dst):
        if Path(dst).name == "metrics.jsonl":
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", killed_before_the_log_is_renamed)
    with pytest.raises(KeyboardInterrupt):
        resumed.fit(progress=False)  # trims the log to step 10 first
    assert (tmp_path / "metrics.jsonl").read_text() == log
    assert not list(tmp_path.glob(".metrics.jsonl.*"))  # no temporary file left behind


def test_writers_of_one_file_never_share_a_temporary_file(tmp_path):
    target = tmp_path / "cache.npz"

    def outer(fh):
        fh.write(b"outer, ")
        gio.atomic_write(target, lambda inner: inner.write(b"inner"))  # a second writer, mid-write
        fh.write(b"complete")

    gio.atomic_write(target, outer)
    assert target.read_bytes() == b"outer, complete"
    assert [p.name for p in tmp_path.iterdir()] == ["cache.npz"]


def test_a_truncated_feature_cache_is_recomputed(tmp_path, monkeypatch):
    from gankit.metrics import evaluate

    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path))
    images = np.arange(64, dtype=np.uint8).reshape(1, 8, 8, 1)
    calls = []

    def compute(imgs):
        calls.append(1)
        return (imgs.reshape(1, -1).astype(np.float32),)

    first = evaluate.cached_features(images, "test", compute)
    (cached,) = list((tmp_path / "features").glob("*.npz"))
    cached.write_bytes(cached.read_bytes()[:40])  # cut short, as by a full disk or a kill
    again = evaluate.cached_features(images, "test", compute)
    assert len(calls) == 2 and np.array_equal(first[0], again[0])
    assert np.array_equal(evaluate.cached_features(images, "test", compute)[0], first[0]) and len(calls) == 2


@contextmanager
def unprivileged():
    """Root writes anywhere; run the block as `nobody` so that file permissions apply."""
    if os.geteuid() != 0:
        yield
        return
    os.setegid(65534)
    os.seteuid(65534)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(0)


def test_a_folder_the_user_cannot_write_to_is_one_line(tmp_path, capsys):
    import torch.export  # noqa: F401 - imported before the permissions drop, as a running program has it

    import gankit.viz.plots  # noqa: F401

    run = tmp_path / "run"
    succeeds(["train", *SETS, "--out", str(run)], capsys)
    # a folder `nobody` can reach (pytest's own temporary folders are private to their owner)
    shared = Path(tempfile.mkdtemp(prefix="gankit-readonly-", dir="/tmp" if os.geteuid() == 0 else None))
    try:
        shared.chmod(0o755)
        readonly = shared / "run"
        shutil.copytree(run, readonly)
        for p in [readonly, *readonly.rglob("*")]:
            p.chmod(0o555 if p.is_dir() else 0o444)
        before = digest(readonly)
        verbs = [["plot", str(readonly)], ["resume", str(readonly), "--steps", "30", "--quiet"],
                 ["sample", str(readonly), "-n", "5", "--out", str(readonly / "x.npz")],
                 ["export", str(readonly), "--out", str(readonly / "g.pt2")],
                 ["train", *SETS, "--out", str(readonly / "new"), "--quiet"]]
        for argv in verbs:
            with unprivileged():
                code = main(argv)
            assert code == 2, argv
            assert "cannot write" in one_error_line(capsys), argv
        assert digest(readonly) == before
    finally:
        for p in [shared, *shared.rglob("*")]:
            p.chmod(0o755)
        shutil.rmtree(shared)


def test_new_files_get_the_mode_open_would_give_them(tmp_path):
    target = tmp_path / "config.toml"
    gio.atomic_write_text(target, "x = 1\n")
    assert target.stat().st_mode & 0o777 == gio.NEW_FILE_MODE == 0o666 & ~current_umask()
    target.chmod(0o600)
    gio.atomic_write_text(target, "x = 2\n")  # a replaced file keeps its mode
    assert target.stat().st_mode & 0o777 == 0o600


def current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask
