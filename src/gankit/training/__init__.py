"""Training: the loop, its state, and checkpoints."""
from gankit.training.trainer import Trainer, resolve_device

__all__ = ["Trainer", "resolve_device"]
