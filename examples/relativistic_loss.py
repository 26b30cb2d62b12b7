"""A relativistic loss of your own in jaxgan's compiled step, trained by a hand-written loop.

    python examples/relativistic_loss.py --steps 300 --out runs/relativistic_loss.png

The loss is a relativistic pairing hinge: D ranks each real pair above the fake it is paired
with by a margin of 1, and G ranks its fakes above the reals (Jolicoeur-Martineau 2018, "The
relativistic discriminator", arXiv:1807.00734, with f(t) = max(0, 1 + t)). D's loss sees the
real, fake and mismatched-caption logits together; G's loss asks for D's logits on the real
batch (``g_needs_real``), which the step computes with the updated D and no gradient to it.
Two pure functions: nothing in jaxgan is edited or subclassed.
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import jaxgan


def d_loss(real: jax.Array, fake: jax.Array, wrong: jax.Array) -> jax.Array:
    """Each real pair above its fake and above the same image with a wrong caption, 1/2 each."""
    return 0.5 * (jnp.mean(jax.nn.relu(1.0 - (real - fake))) + jnp.mean(jax.nn.relu(1.0 - (real - wrong))))


def g_loss(fake: jax.Array, real: jax.Array) -> jax.Array:
    """Each fake above the real it is paired with."""
    return jnp.mean(jax.nn.relu(1.0 - (fake - real)))


RP_HINGE = jaxgan.GANLoss(d=d_loss, g=g_loss, g_needs_real=True, accuracy=jaxgan.pairwise_accuracy)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", default="relativistic_loss.png", help="sample grid of the EMA generator")
    args = p.parse_args(argv)
    config = jaxgan.get_config(args.preset, ["train.num_devices=1"])
    encoder = jaxgan.load_text_encoder(config.text.encoder)
    embed = jaxgan.EmbeddingTable.on_demand(encoder)
    program = jaxgan.build_train_program(config, loss=RP_HINGE)  # the compiled step, with our loss
    state = program.init_placed_state(encoder.sentence_dim)
    pipeline = jaxgan.Pipeline(config, jaxgan.make_source(config), embed)
    for step, batch in enumerate(pipeline.iterate(0, args.steps), start=1):
        state, metrics = program.step(state, program.parallel.put_batch(batch))
        if step % 100 == 0 or step == args.steps:
            print(f"step {step}: d_loss {float(metrics['d_loss']):.4f}, g_loss {float(metrics['g_loss']):.4f}, "
                  f"real ranked above fake {float(metrics['d_acc_real']):.2f}")
    state = program.parallel.to_host(state)
    generator, _ = jaxgan.build_models(config.model)
    prompts = ["a small red circle in the top left", "a large blue square at the bottom of the image"]
    z = jaxgan.sample_noise(np.tile(np.arange(4), len(prompts)), config.model.z_dim)
    text = embed.text([p for p in prompts for _ in range(4)])
    images = np.asarray(jaxgan.make_generate_fn(generator)(state.ema_params, state.ema_stats, z, text))
    jaxgan.save_captioned_grid(images, prompts, 4, args.out)
    return {k: float(v) for k, v in metrics.items()}


if __name__ == "__main__":
    main()
