"""Generator inference in memory: images from prompts, sample grids with captions, manifests.

Loading a trained generator from a workdir is ``jaxgan.workdir.TrainedGenerator``.
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from etils import epath
from PIL import Image, ImageDraw, ImageFont

from jaxgan.paths import workdir_path
from jaxgan.pixels import to_uint8
from jaxgan.state import frozen_params, with_frozen


def sample_noise(seeds: Sequence[int], z_dim: int) -> jax.Array:
    """z [N, Z] with sample i drawn from ``jax.random.key(seeds[i])``: reproducible alone.

    Example:
        z = sample_noise([0, 1, 2], z_dim=100)  # [3, 100]; seed 1 always gives the same row
    """
    keys = jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))
    return jax.vmap(lambda k: jax.random.normal(k, (z_dim,)))(keys)


def make_generate_fn(generator: nn.Module, frozen: Any = None, stacked: bool = False) -> Callable[..., jax.Array]:
    """``generate(params, batch_stats, z, text) -> uint8 [N, R, R, 3]``, compiled.

    ``text`` is a dict with ``sentence`` [N, S] and, for generators with word attention,
    ``words`` [N, L, W] and ``word_mask`` [N, L] (``EmbeddingTable.text``). BatchNorm
    runs in inference mode (running statistics), so a sample does not depend on the other
    samples in its batch. The generator's frozen params (GALIP's CLIP tower) are passed to the
    compiled function as an argument, not embedded in it: ``frozen`` when given (device arrays
    already placed, e.g. the training step's, so a run does not hold the tower twice), else read
    from the generator and put on the device once here. ``generate.frozen`` is that copy.
    ``stacked``: every leaf of ``frozen`` has a leading axis of one (one device's share of the
    pmap step's copy), dropped inside the compiled function, so the share is not copied.

    Example:
        generate = make_generate_fn(generator)
        images = generate(state.ema_params, state.ema_stats, sample_noise([0, 1], 100), embed.text(prompts))
    """

    if frozen is None:
        frozen = jax.device_put(frozen_params(generator))

    @jax.jit
    def compiled(params: Any, batch_stats: Any, z: jax.Array, text: dict[str, jax.Array], frozen: Any) -> jax.Array:
        if stacked:
            frozen = jax.tree.map(lambda x: x[0], frozen)
        variables = with_frozen({"params": params, "batch_stats": batch_stats}, frozen)
        return to_uint8(apply_generator(generator, variables, z, text))

    def generate(params: Any, batch_stats: Any, z: jax.Array, text: dict[str, jax.Array]) -> jax.Array:
        return compiled(params, batch_stats, z, text, frozen)

    generate.frozen = frozen
    return generate


def generator_variables(generator: nn.Module, variables: dict[str, Any]) -> dict[str, Any]:
    """``variables`` ({"params", "batch_stats"}) plus the generator's frozen params, for a
    compiled function that takes them all as an argument (evaluation's ``consts``)."""
    return with_frozen(variables, frozen_params(generator))


def apply_generator(generator: nn.Module, variables: Any, z: jax.Array, text: dict[str, jax.Array],
                    **kwargs: Any) -> Any:
    """``generator`` in inference mode on noise and a text dict (sentence, maybe words)."""
    words = {k: text[k] for k in ("words", "word_mask") if k in text}
    return generator.apply(variables, z, text["sentence"], **words, train=False, **kwargs)


def grid(images: np.ndarray, cols: int, pad: int = 2) -> np.ndarray:
    """Tiles uint8 [N, H, W, 3] into one image, row-major, with ``pad`` grey pixels between."""
    n, h, w, c = images.shape
    rows = -(-n // cols)
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 64, np.uint8)
    for i, image in enumerate(images):
        r, k = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + k * (w + pad):pad + k * (w + pad) + w] = image
    return out


def save_captioned_grid(images: np.ndarray, captions: Sequence[str], per_caption: int,
                        path: str | Path, scale: int | None = None) -> None:
    """One row per caption (``per_caption`` images each), the caption written to its left.

    Example:
        save_captioned_grid(images, ["a red circle", "a blue square"], per_caption=4, path="grid.png")
    """
    h = images.shape[1]
    scale = scale or max(1, 64 // h)
    tiles = np.repeat(np.repeat(images, scale, axis=1), scale, axis=2)
    body = grid(tiles, per_caption)
    row_h = tiles.shape[1] + 2
    label_w = 260
    canvas = Image.new("RGB", (label_w + body.shape[1], body.shape[0]), (255, 255, 255))
    canvas.paste(Image.fromarray(body), (label_w, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for r, caption in enumerate(captions):
        lines = textwrap.wrap(caption, 40)[: max(1, row_h // 12)]
        for j, line in enumerate(lines):
            draw.text((4, 2 + r * row_h + 12 * j), line, fill=(0, 0, 0), font=font)
    save_image(canvas, path)


def write_samples(images: np.ndarray, prompts: Sequence[str], seeds: Sequence[int],
                  out_dir: str | Path, per_prompt: int) -> epath.Path:
    """Writes one PNG per sample, ``grid.png`` and ``manifest.jsonl``; returns the manifest."""
    out = workdir_path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "manifest.jsonl"
    with manifest.open("w") as f:
        for i, (image, prompt, seed) in enumerate(zip(images, prompts, seeds)):
            name = f"{i // per_prompt:03d}_{i % per_prompt:03d}.png"
            save_image(Image.fromarray(np.asarray(image)), out / name)
            f.write(json.dumps({"file": name, "prompt": prompt, "seed": int(seed)}) + "\n")
    save_captioned_grid(np.asarray(images), list(prompts)[::per_prompt], per_prompt, out / "grid.png")
    return manifest


def save_attention_overlays(image: np.ndarray, maps: dict[int, np.ndarray], tokens: list[str],
                            path: str | Path, scale: int | None = None) -> epath.Path:
    """One sample's attention as a PNG: per attention block, a row of the image with each
    token's map overlaid in red (brighter = more attention), the token written below.

    Args:
      image: uint8 [R, R, 3].
      maps: {size: [size*size, L]} for this sample.
      tokens: the real tokens, the first ``len(tokens)`` columns of each map.
    """
    r = image.shape[0]
    scale = scale or max(1, 96 // r)
    side = r * scale
    base = np.repeat(np.repeat(image.astype(np.float32), scale, 0), scale, 1)
    rows = []
    for size in sorted(maps):
        tiles = [base]
        for j in range(len(tokens)):
            m = maps[size][:, j].reshape(size, size)
            m = m / max(float(m.max()), 1e-12)
            up = np.asarray(Image.fromarray((255 * m).astype(np.uint8)).resize((side, side), Image.BILINEAR),
                            np.float32)[..., None] / 255.0
            tiles.append(0.45 * base + 0.55 * up * np.array([255.0, 40.0, 40.0]))
        rows.append(np.concatenate([np.pad(t, ((0, 14), (2, 2), (0, 0)), constant_values=255)
                                    for t in tiles], axis=1))
    canvas = Image.fromarray(np.clip(np.concatenate(rows, axis=0), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for k, size in enumerate(sorted(maps)):
        y = (k + 1) * (side + 14) - 12
        draw.text((4, y), f"{size}x{size}", fill=(0, 0, 0), font=font)
        for j, token in enumerate(tokens):
            draw.text(((j + 1) * (side + 4) + 4, y), token[:12], fill=(0, 0, 0), font=font)
    return save_image(canvas, path)


def save_image(image: Image.Image, path: str | Path) -> epath.Path:
    """Writes ``image`` to ``path`` (local or in a bucket, ``jaxgan.paths``), creating its folder,
    in the format its suffix names (PNG when the suffix names none); returns the path."""
    path = workdir_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as f:  # a file object: PIL cannot open a gs:// name itself
        image.save(f, format=Image.registered_extensions().get(path.suffix.lower(), "PNG"))
    return path

