"""Your own networks: a G and a D written as plain PyTorch modules, trained by gankit.

gankit supplies the rest: the loss (sigmoid cross-entropy on D's logits), Adam, the EMA of G, R1,
checkpoints, metrics and the report, with the settings of a preset (here `points`, the recipe for
vectors). The data is a torch Dataset: points on a spiral, in their own units.

    python examples/own_networks.py [--quick]
"""
import argparse

import numpy as np
import torch
from torch import nn

import gankit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a short run (a few seconds) to try the script")
args = parser.parse_args()


class Spiral(torch.utils.data.Dataset):
    """4,000 points on an Archimedean spiral with a little noise."""

    def __init__(self, n: int = 4000):
        rng = torch.Generator().manual_seed(0)
        t = torch.rand(n, generator=rng) * 3 * torch.pi
        self.points = torch.stack([t * t.cos(), t * t.sin()], 1) + 0.2 * torch.randn(n, 2, generator=rng)

    def __len__(self):
        return len(self.points)

    def __getitem__(self, i):
        return self.points[i]


# G: 16 noise numbers -> a 2-D point. D: a 2-D point -> one logit (log-odds that the point is real).
generator = nn.Sequential(nn.Linear(16, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2),
                          nn.Linear(128, 2))
discriminator = nn.Sequential(nn.Linear(2, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2),
                              nn.Linear(128, 1))

steps = 400 if args.quick else 4000
gan = gankit.GAN("points", settings={"model.z_dim": 16, "train.steps": steps}, out="runs/example-own-networks",
                 generator=generator, discriminator=discriminator, progress=True).fit(Spiral())

points = gan.sample(2000, seed=0)  # in the data's own units
real = Spiral().points.numpy()
for name, p in (("data", real), ("G", points)):
    radius = np.hypot(p[:, 0], p[:, 1])
    print(f"{name}: radius quartiles {np.percentile(radius, [25, 50, 75]).round(1)}")
print("scores:", {k: round(v, 4) for k, v in gan.evaluate(["mmd"], n=1000).items() if isinstance(v, float)})
print("report:", gan.report())
