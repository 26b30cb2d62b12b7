"""Analytic FLOP count of the training step, from the shapes of its conv and dense layers.

This is the cross-check for XLA's own cost analysis of the compiled step. A layer's forward
pass costs 2 * MACs FLOPs (a multiply and an add per MAC):

    Conv:          MACs = B * T_h * T_w * (C_in / groups) * C_out, where T is the number of
                   (output position, kernel tap) pairs per axis whose input lies inside the
                   image: H_out * k_h without padding, fewer with it (zeros are not multiplied;
                   XLA counts them the same way, and at 4x4 a 3x3 conv's padding is 30%);
                   a grouped conv (R3GAN's blocks) reads C_in / groups channels per output
    ConvTranspose: MACs = B * H_in  * W_in  * k_h * k_w * C_in * C_out
    Dense:         MACs = B * D_in * D_out

Its backward pass costs the same again for the weight gradient and again for the input
gradient. The layers are found by running the modules abstractly (``jax.eval_shape``, no
arithmetic) under ``nn.intercept_methods``, so the count follows the models as they are.
Elementwise work (BatchNorm, activations, bilinear resampling, Adam) is not counted: it is a
few percent of the convolutions for these models, which is why the two counts agree only to
about 10%.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgan.config import Config
from jaxgan.losses import LOSSES, AdversarialLoss, GANLoss, as_gan_loss
from jaxgan.models.layers import taps_inside
from jaxgan.state import init_state


@dataclasses.dataclass(frozen=True)
class Layer:
    """One conv or dense call: its module path and multiply-accumulates for the whole batch."""

    path: str
    kind: str
    macs: int


def _conv_taps(module: nn.Conv, x: Any, y: Any) -> int:
    strides = module.strides or (1,) * len(module.kernel_size)
    strides = (strides,) * len(module.kernel_size) if isinstance(strides, int) else strides
    taps = 1
    for axis, (k, s) in enumerate(zip(module.kernel_size, strides), start=1):
        n_in, n_out = x.shape[axis], y.shape[axis]
        if module.padding == "VALID":
            lo = 0
        elif module.padding == "SAME":
            lo = max((n_out - 1) * s + k - n_in, 0) // 2
        else:
            lo = module.padding[axis - 1][0]
        taps *= taps_inside(n_in, n_out, k, s, lo)
    return taps


def _macs(module: nn.Module, x: Any, y: Any) -> int:
    if isinstance(module, nn.Dense):
        return math.prod(y.shape[:-1]) * x.shape[-1] * module.features
    if isinstance(module, nn.ConvTranspose):
        # Every input pixel meets every tap; border effects are ignored for this non-default layer.
        return math.prod(x.shape[:-1]) * math.prod(module.kernel_size) * x.shape[-1] * module.features
    if isinstance(module, nn.Conv):
        if module.kernel_dilation not in (None, 1) or module.input_dilation not in (None, 1):
            raise NotImplementedError("dilated convolutions are not counted")
        per_image = _conv_taps(module, x, y) * x.shape[-1] * module.features // module.feature_group_count
        return x.shape[0] * per_image
    raise TypeError(type(module))


_COUNTED = (nn.Dense, nn.Conv, nn.ConvTranspose)


def trace_layers(module: nn.Module, variables: Any, *args: Any, **kwargs: Any) -> list[Layer]:
    """Every Dense/Conv/ConvTranspose call of ``module.apply(variables, *args, **kwargs)``.

    A module of our own that computes a conv its own way (``ResizeConv``) says what it costs
    with a ``macs(x, y)`` method; its inner ops are then not counted again.
    """
    layers: list[Layer] = []

    def record(next_fun, call_args, call_kwargs, context):
        out = next_fun(*call_args, **call_kwargs)
        m = context.module
        if context.method_name == "__call__" and (hasattr(m, "macs") or isinstance(m, _COUNTED)):
            macs = m.macs(call_args[0], out) if hasattr(m, "macs") else _macs(m, call_args[0], out)
            layers.append(Layer("/".join(m.scope.path), type(m).__name__, macs))
        return out

    # Array keyword arguments (word embeddings) must be traced too, not closed over.
    arrays = {k: v for k, v in kwargs.items() if isinstance(v, (jax.ShapeDtypeStruct, jax.Array))}
    static = {k: v for k, v in kwargs.items() if k not in arrays}
    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, a, kw: module.apply(v, *a, mutable=["batch_stats"], **kw, **static),
                       variables, args, arrays)
    return layers


def forward_flops(layers: list[Layer]) -> int:
    return 2 * sum(layer.macs for layer in layers)


WORDS_PER_CAPTION = 16  # token positions assumed for word attention (the shapes encoder's length)


def step_flops(config: Config, generator: nn.Module, discriminator: nn.Module, sentence_dim: int,
               loss: GANLoss | AdversarialLoss | None = None) -> dict[str, int]:
    """Analytic FLOPs of one ``jaxgan.step`` train step at the global batch size.

    The step (see ``jaxgan/step.py``) runs, in units of a forward pass F:
      G: forward (1F), backward through the kept VJP (2F: weight + input gradients),
         the EMA generator's forward for its BatchNorm statistics (1F): 4 F_G. With the
         diversity term (``train.diversity_weight > 0``) G's forward and backward also run on
         the twins (one per even example): 3 F_G more at half the batch.
      D update: forward on (real, caption, wrong caption) and on (fake, caption), then the
         backward of both (2F each): 3 (F_D2 + F_D1).
      G loss: forward of the updated D on (fake, caption) and the gradient w.r.t. its input
         only (1F): 2 F_D1. A relativistic G loss (``loss.g_needs_real``: ``rpgan``, ``ragan``)
         also runs the updated D forward on (real, caption), with no gradient: 1 F_D1 more.
    Input gradients of the layers that read data (the first conv on images, the sentence
    projections) are counted although nothing needs them: under 1% of the total here.
    Not counted: gradient penalties (MA-GP/R1/WGAN-GP add a double backward through D on
    real images, about 5 F_D1 more) and DiffAugment, so XLA's count exceeds this one when
    they are on. Word attention is counted with ``WORDS_PER_CAPTION`` tokens.

    Args:
      loss: the loss the step is built with, as ``make_train_step``'s ``loss`` (default:
        ``LOSSES[train.loss]``); only whether G's loss needs D(real) matters.
    """
    b, r, z_dim = config.train.batch_size, config.model.resolution, config.model.z_dim
    state = jax.eval_shape(lambda: init_state(config, generator, discriminator, sentence_dim))
    g_vars = {"params": state.g_params, "batch_stats": state.g_stats}
    d_vars = {"params": state.d_params, "batch_stats": state.d_stats}

    def g_forward(batch: int) -> int:
        z = jax.ShapeDtypeStruct((batch, z_dim), jnp.float32)
        s = jax.ShapeDtypeStruct((batch, sentence_dim), jnp.float32)
        words = {}
        if config.model.uses_word_attention:
            words = {"words": jax.ShapeDtypeStruct((batch, WORDS_PER_CAPTION, sentence_dim), jnp.float32),
                     "word_mask": jax.ShapeDtypeStruct((batch, WORDS_PER_CAPTION), bool)}
        return forward_flops(trace_layers(generator, g_vars, z, s, **words, train=True,
                                          rngs={"ca": jax.random.key(0)}))

    s = jax.ShapeDtypeStruct((b, sentence_dim), jnp.float32)
    image = jax.ShapeDtypeStruct((b, r, r, 3), jnp.float32)
    f_g = g_forward(b)
    f_d2 = forward_flops(trace_layers(discriminator, d_vars, image, s, s, train=True))
    f_d1 = forward_flops(trace_layers(discriminator, d_vars, image, s, train=True))
    parts = {"generator": 4 * f_g, "d_update": 3 * (f_d2 + f_d1), "g_loss_through_d": 2 * f_d1}
    if config.train.diversity_weight > 0:
        parts["generator_twins"] = 3 * g_forward((b + 1) // 2)
    if as_gan_loss(loss or LOSSES[config.train.loss]).g_needs_real:
        parts["g_loss_real_logits"] = f_d1
    return {**parts, "total": sum(parts.values()), "generator_forward": f_g,
            "discriminator_forward": f_d1}
