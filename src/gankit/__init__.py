"""gankit: train, understand and evaluate Generative Adversarial Networks on PyTorch."""
__version__ = "0.1.0"

from gankit.api import GAN, load  # noqa: E402  (the facade needs __version__ defined first)

__all__ = ["GAN", "load", "__version__"]
