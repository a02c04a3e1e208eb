"""Networks by name (see `gankit list models`)."""
from gankit.models.base import Discriminator, Generator
from gankit.models.dcgan import build_dcgan
from gankit.models.mlp import MLPDiscriminator, MLPGenerator, build_mlp
from gankit.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("mlp", "MLP G and D for vectors or images (D feature layer, PacGAN packing, conditional)")(build_mlp)
MODELS.register("dcgan", "DCGAN for 28x28 (TensorFlow tutorial), 32x32 and 64x64 images (Radford et al.)")(
    build_dcgan)

__all__ = ["MODELS", "Discriminator", "Generator", "MLPDiscriminator", "MLPGenerator", "build_dcgan", "build_mlp"]
