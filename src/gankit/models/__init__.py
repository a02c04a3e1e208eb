"""Networks by name (see `gankit list models`)."""
from gankit.models.base import Discriminator, Generator
from gankit.models.dcgan import build_dcgan
from gankit.models.mlp import MLPDiscriminator, MLPGenerator, build_mlp
from gankit.errors import UserError
from gankit.registry import Registry

MODELS: Registry = Registry("model")
MODELS.register("mlp", "MLP G and D for vectors or images (D feature layer, PacGAN packing, conditional)")(build_mlp)
MODELS.register("dcgan", "DCGAN for 28x28 (TensorFlow tutorial), 32x32 and 64x64 images (Radford et al.)")(
    build_dcgan)



def _python_networks_not_here(*_args, **_kwargs):
    raise UserError("this run's networks were passed from Python (model.name = 'python'); load it in Python "
                    "with gankit.load(RUN, generator=G, discriminator=D), giving the same two modules")


# Replaced by gankit.GAN(generator=..., discriminator=...) in the process that has the modules.
MODELS.register("python", "your own G and D as nn.Modules, from Python: gankit.GAN(generator=G, discriminator=D)")(
    _python_networks_not_here)

__all__ = ["MODELS", "Discriminator", "Generator", "MLPDiscriminator", "MLPGenerator", "build_dcgan", "build_mlp"]
