"""DCGAN on MNIST: convolutional networks that draw digits.

G maps 100 noise numbers and one of 10 categories through a dense layer to 7x7 feature maps, then
transposed convolutions with batch norm (its scale and shift picked by the category) and LeakyReLU
up to a 28x28 image, squashed by tanh into [-1, 1] (MNIST is scaled to match). D reads an image
through strided convolutions with LeakyReLU to one logit, and a head on its features guesses the
category (InfoGAN), which G is trained to make tellable (on every other step from randomly warped
copies, so that a category differs in which digit it is, not in slant or size); a light
mode-seeking term keeps G's noise alive within each category. Each step one D update, then one G
update from the same G forward; the progress bar shows the epoch, both losses, D(x) and D(G(z)).
Adam with beta1 0.5, G at 1e-3 and D at 2e-4, batch 128: the `mnist-dcgan` preset
(docs/results.md).

The MNIST files (IDX, as published) are read from --data-root; `--download` fetches them when online.
At the end: a grid of 64 digits (PNG) and the bundled MNIST classifier's verdict on 2,000 samples
(how many it reads with confidence, and how evenly the ten digits appear).

    python examples/dcgan_mnist.py [--quick] [--data-root data/mnist] [--download]
"""
import argparse
from pathlib import Path

import numpy as np
from PIL import Image

import gankit

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--quick", action="store_true", help="a short run (about half a minute) to try the script")
parser.add_argument("--data-root", default="data/mnist", help="folder of the MNIST IDX files")
parser.add_argument("--split", default="train", choices=["train", "test"], help="which MNIST images to learn")
parser.add_argument("--download", action="store_true", help="fetch the MNIST files when they are missing")
args = parser.parse_args()

settings = {"data.root": args.data_root, "data.split": args.split, "data.download": args.download}
if args.quick:
    settings.update({"train.steps": 200, "train.snapshot_every": 100})
gan = gankit.GAN("mnist-dcgan", settings=settings, out="runs/example-dcgan-mnist", progress=True).fit()

# 64 digits as one 8x8 picture: sample() gives uint8 images (N, H, W, C).
digits = gan.sample(64, seed=0)[..., 0]
grid = digits.reshape(8, 8, 28, 28).transpose(0, 2, 1, 3).reshape(8 * 28, 8 * 28)
out = Path(gan.run_dir) / "digits.png"
Image.fromarray(grid).resize((448, 448), Image.NEAREST).save(out)
print("digits:", out)

scores = gan.evaluate(["classifier"], n=2000)
print(f"the bundled classifier reads {100 * scores['confident']:.0f}% of the digits with confidence >= 0.9, "
      f"finds {scores['classes_covered']} of 10 classes, classifier score {scores['classifier_score']:.2f} "
      "(real MNIST: about 9.3)")
