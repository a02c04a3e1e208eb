"""gankit: train, understand and evaluate Generative Adversarial Networks on PyTorch."""
__version__ = "0.1.0"

from gankit.api import GAN, load  # noqa: E402  (the facade needs __version__ defined first)
from gankit.errors import UserError  # noqa: E402  (bad input: one message naming the problem and the fix)

__all__ = ["GAN", "load", "UserError", "__version__"]
