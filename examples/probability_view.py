"""The probability view: D against the optimal D*, and V(D, G) against -log 4.

For a fixed G, the best discriminator is D*(x) = p_data(x) / (p_data(x) + p_g(x)), and the value
function V(D, G) = E log D(x) + E log(1 - D(G(z))) at D* equals -log 4 + 2 JSD(p_data || p_g). So as
G learns, JSD falls towards 0 and V(D*, G) towards -log 4 = -1.386, and a well-trained D should
look like D*. On ring8 (8 Gaussians on a circle: a density gankit knows exactly) this script
trains a GAN, evaluates those quantities during training (p_g is estimated from G's samples by a
kernel density estimate) and prints them; plots/probability.gif shows D beside D* over training.

    python examples/probability_view.py [--quick]
"""
import argparse
import math

import gankit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a short run (about half a minute) to try the script")
args = parser.parse_args()

steps = 600 if args.quick else 8000
settings = {
    "model.pack": 1,  # D judges one point at a time, so its output is comparable with D*(x)
    "train.steps": steps,
    "eval.every": steps // 4,
    "eval.metrics": ["probability", "modes"],
    "eval.n": 1000 if args.quick else 2500,
}
gan = gankit.GAN("ring8", settings=settings, out="runs/example-probability-view", progress=True).fit()

print(f"{'step':>6} {'JSD':>7} {'V(D*,G)':>9} {'V(D,G)':>8} {'|D - D*|':>9} {'modes':>6}   (-log 4 = {-math.log(4):.3f})")
for row in gan.history():
    if row.get("eval"):
        print(f"{row['step']:>6} {row['jsd']:>7.3f} {row['value_d_star']:>9.3f} {row['value_d']:>8.3f} "
              f"{row['d_star_error']:>9.3f} {row['modes']:>6}")
# V(D*, G) can only be at or above -log 4: the gap is twice the JSD. V(D, G) of the trained D sits
# below V(D*, G): D* is the best D, and the trained D is a step behind G.

for path in gan.plot():
    if "probability" in path.name or "eval" in path.name:
        print("picture:", path)
