"""A loss of your own in jaxgan's compiled step, trained by a hand-written loop.

    python examples/custom_loss.py --steps 300 --out runs/custom_loss.png

The loss is one-sided label smoothing (Salimans et al. 2016, "Improved Techniques for Training
GANs"): D's target for real pairs is 0.9 instead of 1. It is three pure functions of D's
logits; jaxgan composes them with the matching-aware D loss, the penalty, DiffAugment and the
EMA into one compiled step. Nothing in jaxgan is edited or subclassed.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jaxgan


def smoothed_d_real(logits: jax.Array) -> jax.Array:
    """-(0.9 log D(x) + 0.1 log(1 - D(x))) with D = sigmoid(logits): real target 0.9."""
    return jnp.mean(0.9 * jax.nn.softplus(-logits) + 0.1 * jax.nn.softplus(logits))


SMOOTHED = jaxgan.AdversarialLoss(d_real=smoothed_d_real, d_fake=lambda x: jnp.mean(jax.nn.softplus(x)),
                                  g=lambda x: jnp.mean(jax.nn.softplus(-x)))


def train_with(loss, argv=None, description: str = "", out: str = "custom_loss.png") -> dict:
    """Trains the preset with ``loss`` by a hand-written loop and saves a sample grid of the
    EMA generator; returns the last step's metrics. ``examples/relativistic_loss.py`` uses it too."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default=out, help="sample grid of the EMA generator")
    args = p.parse_args(argv)
    config = jaxgan.get_config(args.preset, ["train.num_devices=1"])
    encoder = jaxgan.load_text_encoder(config.text.encoder)
    embed = jaxgan.EmbeddingTable.on_demand(encoder)
    program = jaxgan.build_train_program(config, loss=loss)  # the compiled step, with our loss
    state = program.init_placed_state(encoder.sentence_dim)
    pipeline = jaxgan.Pipeline(config, jaxgan.make_source(config), embed)
    for step, batch in enumerate(pipeline.iterate(0, args.steps), start=1):
        state, metrics = program.step(state, program.parallel.put_batch(batch))
        if step % 100 == 0 or step == args.steps:
            # d_acc_real: the fraction of real pairs D gets right, by the loss's own accuracy.
            print(f"step {step}: d_loss {float(metrics['d_loss']):.4f}, g_loss {float(metrics['g_loss']):.4f}, "
                  f"d_acc_real {float(metrics['d_acc_real']):.2f}")
    state = program.parallel.to_host(state)
    generator, _ = jaxgan.build_models(config.model)
    prompts = ["a small red circle in the top left", "a large blue square at the bottom of the image"]
    z = jaxgan.sample_noise(np.tile(np.arange(4), len(prompts)), config.model.z_dim)
    text = embed.text([p for p in prompts for _ in range(4)])
    images = np.asarray(jaxgan.make_generate_fn(generator)(state.ema_params, state.ema_stats, z, text))
    jaxgan.save_captioned_grid(images, prompts, 4, args.out)
    return {k: float(v) for k, v in metrics.items()}


def main(argv=None) -> dict:
    return train_with(SMOOTHED, argv, __doc__.splitlines()[0], "custom_loss.png")


if __name__ == "__main__":
    main()
