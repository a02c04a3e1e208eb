"""Networks by name (see `gankit list models`)."""
from gankit.models.mlp import MLPDiscriminator, MLPGenerator, build_mlp
from gankit.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("mlp", "MLP generator and discriminator (optional D feature layer, PacGAN packing)")(build_mlp)

__all__ = ["MODELS", "MLPDiscriminator", "MLPGenerator", "build_mlp"]
