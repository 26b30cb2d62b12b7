"""Eight tiny shapes GANs, one compiled step: a learning-rate sweep with jax.vmap.

    python examples/sweep_vmap.py --steps 400 --out runs/sweep.png

Each member has its own seed and discriminator learning rate (log-spaced 5e-5 to 2e-3); the
values live in the stacked state, so ``jax.vmap`` of the ordinary train step trains all
eight at once on the same batches. The plot compares the members' D and G losses.
"""

import argparse

import numpy as np

import jaxgan
from jaxgan import sweep


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=8)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--log-every", type=int, default=20)
    p.add_argument("--out", default="sweep.png")
    args = p.parse_args(argv)
    config = jaxgan.get_config("tiny", ["train.num_devices=1"])
    d_lrs = np.geomspace(5e-5, 2e-3, args.members)
    members = [{"train.seed": i, "train.d_lr": float(lr)} for i, lr in enumerate(d_lrs)]
    encoder = jaxgan.load_text_encoder(config.text.encoder)
    generator, discriminator = jaxgan.build_models(config.model)
    states = sweep.init_members(config, generator, discriminator, encoder.sentence_dim, members)
    step = sweep.make_sweep_step(config, generator, discriminator)
    pipeline = jaxgan.Pipeline(config, jaxgan.make_source(config), jaxgan.EmbeddingTable.on_demand(encoder))
    history = {"step": [], "d_loss": [], "g_loss": []}
    for i, batch in enumerate(pipeline.iterate(0, args.steps), start=1):
        states, metrics = step(states, batch)
        if i % args.log_every == 0 or i == args.steps:
            history["step"].append(i)
            for key in ("d_loss", "g_loss"):
                history[key].append(np.asarray(metrics[key]))  # one value per member
    plot(history, d_lrs, args.out)
    return {"d_lr": d_lrs, "final_d_loss": history["d_loss"][-1], "final_g_loss": history["g_loss"][-1]}


def plot(history: dict, d_lrs: np.ndarray, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    colours = plt.cm.viridis(np.linspace(0, 1, len(d_lrs)))
    for ax, key in zip(axes, ("d_loss", "g_loss")):
        values = np.stack(history[key])  # [logs, members]
        for m, lr in enumerate(d_lrs):
            ax.plot(history["step"], values[:, m], color=colours[m], label=f"D lr {lr:.1e}")
        ax.set(xlabel="step", title=key)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{len(d_lrs)} GANs trained by one vmapped step")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
