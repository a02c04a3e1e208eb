"""TensorBoard mirror of a run (train.tensorboard = true): RUN/tensorboard/ event files.

Every numeric field of every metrics.jsonl row goes in as a scalar of the same name at the row's
step (training rows: d_loss, g_loss, d_real, ...; evaluation rows: fid, modes, ...; event rows under
EVENT/field, e.g. drs_critic/acceptance), the fixed-noise sample grids of image runs as images, and
the resolved config as text. Written through torch.utils.tensorboard, which needs the optional
`tensorboard` package; metrics.jsonl stays the run's own record.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from gankit.errors import UserError

INSTALL = "pip install tensorboard (or gankit[tensorboard])"


def check_available() -> None:
    """A one-line error naming the install command, before a run starts, when tensorboard is missing."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise UserError(f"train.tensorboard = true needs the tensorboard package: {INSTALL}") from None


class TensorBoardLog:
    def __init__(self, run_dir: Path, config_text: str, step: int = 0):
        """Continuing at `step` (a resume, a rollback): TensorBoard drops what the files hold after it,
        as metrics.jsonl is cut back to the checkpoint, so no stretch shows twice."""
        check_available()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"), purge_step=step + 1 if step else None)
        if not step:
            self.writer.add_text("config", "    " + config_text.replace("\n", "\n    "), 0)  # indented: verbatim

    def row(self, row: dict[str, Any]) -> None:
        step, event = int(row.get("step", 0)), row.get("event")
        for key, value in row.items():
            if key in ("step", "eval") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            self.writer.add_scalar(f"{event}/{key}" if event else key, value, step)

    def images(self, step: int, images: np.ndarray) -> None:
        """uint8 images (N, C, H, W), the fixed-noise samples of one snapshot."""
        self.writer.add_images("samples", images, step, dataformats="NCHW")

    def close(self) -> None:
        self.writer.close()
