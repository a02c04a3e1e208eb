"""The sigmoid's role: D's logits, a numerically stable loss, and G's output activation.

1. D outputs a logit s; sigmoid(s) = 1 / (1 + e^-s) is its probability that x is real. The loss
   -log sigmoid(s) computed in two steps breaks for confident mistakes: sigmoid(-120) underflows to
   0 in float32 and its log is -inf. Computed from the logit in one step (PyTorch's
   binary_cross_entropy_with_logits, which gankit's losses use) it is log(1 + e^-s): exact and finite.
2. G's last activation must cover the data's range: tanh gives [-1, 1], sigmoid [0, 1]. A sigmoid G
   on data in [-1, 1] can never make a negative value, so half of the data is out of its reach;
   gankit scales images to match the chosen activation, and refuses one that fits no pixel range.

    python examples/sigmoid_role.py [--quick]
"""
import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import gankit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="shorter training (a few seconds)")
args = parser.parse_args()

# 1. The loss for a real x, -log D(x), from a logit s: two steps against one.
print("logit s    -log(sigmoid(s)) in two steps    log(1 + e^-s) from the logit")
for s in [5.0, -20.0, -90.0, -120.0]:
    logit = torch.tensor([s])
    two_steps = -torch.log(torch.sigmoid(logit)).item()
    from_logit = F.binary_cross_entropy_with_logits(logit, torch.ones(1)).item()
    print(f"{s:7.1f}    {two_steps:>28.4f}    {from_logit:>28.4f}")

# 2. G's output activation against data in [-1, 1] (raw units: no standardising, so the activation's
# range is the range G can reach).
rng = np.random.default_rng(0)
X = np.stack([rng.uniform(-1, 1, 4000), rng.uniform(-1, 1, 4000)], axis=1)
steps = 400 if args.quick else 3000
for output in ("tanh", "sigmoid"):
    gan = gankit.GAN("quadratic", settings={"model.g_output": output, "data.normalize": False,
                                            "train.steps": steps, "viz.plot_at_end": False}).fit(X)
    made = gan.sample(2000, seed=0)
    negative = np.mean(made < 0)
    print(f"G with a {output} output: samples in [{made.min():.2f}, {made.max():.2f}], "
          f"{100 * negative:.0f}% of coordinates negative (data: 50%)")

# 3. An output activation that fits no pixel range is refused before training, in one line.
with tempfile.TemporaryDirectory() as folder:
    images = Path(folder) / "digits.npz"
    np.savez(images, images=(rng.random((16, 28, 28)) * 255).astype(np.uint8))  # any 28x28 grey images
    try:
        gankit.GAN("mnist-dcgan", settings={"model.g_output": "none", "data.name": f"images:{images}"}).fit()
    except gankit.UserError as error:
        print("gankit refused:", error)
