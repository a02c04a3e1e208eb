"""The counterfeiter and the police: a GAN learns points on the curve y = 10 + x^2.

The generator G (the counterfeiter) turns 2-D noise into points; the discriminator D (the police)
sees real points of the curve and G's points and outputs a logit: the log-odds that a point is
real. They take turns: D learns to tell the two apart, then G learns to fool the new D. When G's
points lie on the curve, D can do no better than a coin toss, D(x) = 1/2 everywhere, and the losses
settle at D's 2 ln 2 = 1.386 and G's ln 2 = 0.693.

`--exact` trains the article's own recipe (the `seed-quadratic` preset: raw units, RMSProp, 10 D
and 10 G updates a step, 10,001 steps; about 4 minutes); the default is the `quadratic` preset, the
same networks on standardised data (about 30 seconds). The pictures (the scatter of real and
generated points, D's 2-D feature layer before and after each update, D's decision surface, as
GIFs over training) are listed at the end.

    python examples/counterfeiter_and_police.py [--quick] [--exact]
"""
import argparse
import math

import numpy as np

import gankit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a short run (a few seconds) to try the script")
parser.add_argument("--exact", action="store_true", help="the article's exact recipe (seed-quadratic)")
args = parser.parse_args()

preset = "seed-quadratic" if args.exact else "quadratic"
settings = {"train.steps": 500, "train.snapshot_every": 250} if args.quick else {}
gan = gankit.GAN(preset, settings=settings, out=f"runs/example-{preset}", progress=True).fit()

# The losses of the last tenth of training against the equilibrium values.
logged = [row for row in gan.history() if "d_loss" in row]
tail = logged[-max(1, len(logged) // 10):]
d_loss = np.mean([row["d_loss"] for row in tail])
g_loss = np.mean([row["g_loss"] for row in tail])
print(f"D loss {d_loss:.3f} (equilibrium 2 ln 2 = {2 * math.log(2):.3f}), "
      f"G loss {g_loss:.3f} (equilibrium ln 2 = {math.log(2):.3f})")

# G's points, in the data's own units: how far do they sit from the curve?
points = gan.sample(1000, seed=0)
off_curve = np.abs(points[:, 1] - (10 + points[:, 0] ** 2))
print(f"median distance of G's points from the curve: {np.median(off_curve):.1f} "
      f"(the curve's height over x in [-50, 50]: 2,500)")

for path in gan.plot():
    if path.suffix == ".gif" or path.name == "losses.png":  # the frames behind each GIF are there too
        print("picture:", path)
