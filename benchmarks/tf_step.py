"""The TF-Keras peer of benchmarks/step_speed.py: the TensorFlow DCGAN tutorial's train step.

Runs under a Python that has tensorflow-cpu (its own virtual environment; never a gankit
dependency) and prints one JSON line: images per second after a warm-up, and peak resident memory.
The step is the tutorial's: one `tf.function` that runs G once and D on the real and the generated
batch under two gradient tapes, then applies both gradients (simultaneous updates). Networks:
`dcgan`, the tutorial's own; `mlp`, the probability-view article's MLP GAN. Adam 2e-4 / 0.5 for
both, as gankit's presets; data: uniform noise images in [-1, 1] kept in memory (the step's cost
does not depend on the pixel values; sampling a batch is a gather, as it is in the other rows).
With --serve it trains windows on request instead (step_speed.py --turns): after the warm-up it
prints a ready line, then reads a step count per line from stdin and answers each with the
window's seconds, until "stop", answered with the peak memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import tensorflow as tf
from tensorflow.keras import layers

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_speed import take_turns  # noqa: E402  (the standard library only, at import)


def generator(net: str) -> tf.keras.Model:
    if net == "mlp":
        return tf.keras.Sequential([tf.keras.Input((100,)), *[layers.Dense(w, activation="relu") for w in
                                                              (128, 256, 512, 1024)],
                                    layers.Dense(784, activation="tanh"), layers.Reshape((28, 28, 1))])
    return tf.keras.Sequential([
        tf.keras.Input((100,)),
        layers.Dense(7 * 7 * 256, use_bias=False), layers.BatchNormalization(), layers.LeakyReLU(0.3),
        layers.Reshape((7, 7, 256)),
        layers.Conv2DTranspose(128, 5, strides=1, padding="same", use_bias=False), layers.BatchNormalization(),
        layers.LeakyReLU(0.3),
        layers.Conv2DTranspose(64, 5, strides=2, padding="same", use_bias=False), layers.BatchNormalization(),
        layers.LeakyReLU(0.3),
        layers.Conv2DTranspose(1, 5, strides=2, padding="same", activation="tanh")])


def discriminator(net: str) -> tf.keras.Model:
    if net == "mlp":
        return tf.keras.Sequential([tf.keras.Input((28, 28, 1)), layers.Flatten(),
                                    *[layers.Dense(w, activation="relu") for w in (512, 256, 128)], layers.Dense(1)])
    return tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        layers.Conv2D(64, 5, strides=2, padding="same"), layers.LeakyReLU(0.3), layers.Dropout(0.3),
        layers.Conv2D(128, 5, strides=2, padding="same"), layers.LeakyReLU(0.3), layers.Dropout(0.3),
        layers.Flatten(), layers.Dense(1)])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--net", choices=["mlp", "dcgan"], required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--serve", action="store_true", help="train windows on request (stdin) after the warm-up")
    args = parser.parse_args()
    g, d = generator(args.net), discriminator(args.net)
    cross_entropy = tf.keras.losses.BinaryCrossentropy(from_logits=True)
    opt_g = tf.keras.optimizers.Adam(2e-4, beta_1=0.5)
    opt_d = tf.keras.optimizers.Adam(2e-4, beta_1=0.5)
    data = tf.random.uniform((10_000, 28, 28, 1), -1.0, 1.0)
    batch = args.batch

    @tf.function
    def train_step():
        images = tf.gather(data, tf.random.uniform((batch,), 0, 10_000, dtype=tf.int32))
        noise = tf.random.normal([batch, 100])
        with tf.GradientTape() as gen_tape, tf.GradientTape() as disc_tape:
            generated = g(noise, training=True)
            real_output = d(images, training=True)
            fake_output = d(generated, training=True)
            gen_loss = cross_entropy(tf.ones_like(fake_output), fake_output)
            disc_loss = cross_entropy(tf.ones_like(real_output), real_output) + \
                cross_entropy(tf.zeros_like(fake_output), fake_output)
        opt_g.apply_gradients(zip(gen_tape.gradient(gen_loss, g.trainable_variables), g.trainable_variables))
        opt_d.apply_gradients(zip(disc_tape.gradient(disc_loss, d.trainable_variables), d.trainable_variables))
        return disc_loss

    def timed_steps(n: int) -> float:
        started = time.perf_counter()
        for _ in range(n):
            loss = train_step()
        float(loss)  # the queued work is done before the clock stops
        return time.perf_counter() - started

    for _ in range(args.warmup):
        train_step()
    float(train_step())  # wait for the queued work before the clock starts
    if args.serve:
        take_turns(timed_steps, {})
        return
    seconds = timed_steps(args.steps)
    print(json.dumps({"images_per_s": args.steps * batch / seconds,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "device": "cpu"}))


if __name__ == "__main__":
    main()
