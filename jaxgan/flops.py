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
    Attention:     MACs = the two matmuls, e.g. 2 * B * T^2 * D for T tokens of width D
                   (QK^T and weights @ V over all heads); a module says so with
                   ``attention_macs(args, out)``, its projections being Dense layers

Its backward pass costs the same again for the weight gradient and again for the input
gradient. A frozen component (a CLIP tower: its params are closed over, applied with a
``module.apply`` of its own inside G or D, or in a step piece such as GALIP's ``d_input``) has
no weight gradient: its layers are marked ``frozen`` and cost the forward and, where a
gradient passes through them, the input gradient only. The layers are found by running the
modules abstractly (``jax.eval_shape``, no arithmetic) under ``nn.intercept_methods``, so the
count follows the models as they are.
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
from jaxgan.models import step_pieces
from jaxgan.models.layers import taps_inside
from jaxgan.state import frozen_params, init_state, with_frozen


@dataclasses.dataclass(frozen=True)
class Layer:
    """One conv or dense call: its module path and multiply-accumulates for the whole batch."""

    path: str
    kind: str
    macs: int
    frozen: bool = False  # a frozen component's layer: no weight gradient


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


def trace_calls(fn: Any, *args: Any, trained: bool = True) -> list[Layer]:
    """Every Dense/Conv/ConvTranspose call and attention of ``fn(*args)``, run abstractly.

    ``trained``: the first module ``fn`` applies is the trained one, and a layer whose module
    belongs to another ``apply`` (a frozen tower called from inside it) is marked frozen; with
    ``trained=False`` every layer is (``fn`` is a frozen piece such as ``d_input``).

    A module of our own that computes a conv its own way (``ResizeConv``) says what it costs
    with a ``macs(x, y)`` method; its inner ops are then not counted again.
    """
    layers: list[Layer] = []
    roots: list[Any] = []

    def record(next_fun, call_args, call_kwargs, context):
        m = context.module
        if not roots:
            roots.append(m.scope.root if trained else None)
        out = next_fun(*call_args, **call_kwargs)
        frozen = m.scope.root is not roots[0]
        if context.method_name == "__call__" and (hasattr(m, "macs") or isinstance(m, _COUNTED)):
            macs = m.macs(call_args[0], out) if hasattr(m, "macs") else _macs(m, call_args[0], out)
            layers.append(Layer("/".join(m.scope.path), type(m).__name__, macs, frozen))
        if context.method_name == "__call__" and hasattr(m, "attention_macs"):
            layers.append(Layer("/".join(m.scope.path), "attention", m.attention_macs(call_args, out), frozen))
        return out

    with nn.intercept_methods(record):
        jax.eval_shape(fn, *args)
    return layers


def trace_layers(module: nn.Module, variables: Any, *args: Any, **kwargs: Any) -> list[Layer]:
    """Every Dense/Conv/ConvTranspose call and attention of ``module.apply(variables, *args, **kwargs)``
    (see ``trace_calls``; the layers of a frozen tower it applies are marked frozen)."""
    # Array keyword arguments (word embeddings) must be traced too, not closed over.
    arrays = {k: v for k, v in kwargs.items() if isinstance(v, (jax.ShapeDtypeStruct, jax.Array))}
    static = {k: v for k, v in kwargs.items() if k not in arrays}
    return trace_calls(lambda v, a, kw: module.apply(v, *a, mutable=["batch_stats"], **kw, **static),
                       variables, args, arrays)


def forward_flops(layers: list[Layer]) -> int:
    """FLOPs of one forward pass of ``layers``."""
    return 2 * sum(layer.macs for layer in layers)


def pass_flops(layers: list[Layer], forward: int, input_grads: int, weight_grads: int) -> int:
    """FLOPs of ``forward`` forward passes of ``layers``, ``input_grads`` backward passes to their
    inputs and ``weight_grads`` to their weights; a frozen layer has no weight gradient."""
    return 2 * sum(layer.macs * (forward + input_grads + (0 if layer.frozen else weight_grads))
                   for layer in layers)


WORDS_PER_CAPTION = 16  # token positions assumed for word attention (the shapes encoder's length)


def step_flops(config: Config, generator: nn.Module, discriminator: nn.Module, sentence_dim: int,
               loss: GANLoss | AdversarialLoss | None = None) -> dict[str, int]:
    """Analytic FLOPs of one ``jaxgan.step`` train step at the global batch size.

    The step (see ``jaxgan/step.py``) runs, in units of a forward pass F:
      G: forward (1F), backward through the kept VJP (2F: weight + input gradients),
         the EMA generator's forward for its BatchNorm statistics (1F): 4 F_G (a frozen
         tower inside G: 3 F, no weight gradient). With the diversity term
         (``train.diversity_weight > 0``) G's forward and backward also run on the twins (one
         per even example): 3 F_G more at half the batch.
      D update: forward on (real, caption, wrong caption) and on (fake, caption), then the
         backward of both (2F each): 3 (F_D2 + F_D1).
      G loss: forward of the updated D on (fake, caption) and the gradient w.r.t. its input
         only (1F): 2 F_D1. A relativistic G loss (``loss.g_needs_real``: ``rpgan``, ``ragan``)
         also runs the updated D forward on (real, caption), with no gradient: 1 F_D1 more.
      The architecture's step pieces (``jaxgan.models.step_pieces``, e.g. GALIP's), frozen:
      ``d_input`` forward on the real and the fake batch for the D update and forward plus
      input gradient on the fakes for G (4 F_in, part ``d_input``, one forward more on the
      real batch with a relativistic G loss; D's own passes then read its output);
      ``g_loss_term`` forward plus input gradient (2 F_term, part ``g_loss_term``).
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
    frozen = frozen_params(generator, discriminator)
    g_vars = with_frozen({"params": state.g_params, "batch_stats": state.g_stats}, frozen)
    d_vars = with_frozen({"params": state.d_params, "batch_stats": state.d_stats}, frozen)

    s = jax.ShapeDtypeStruct((b, sentence_dim), jnp.float32)
    image = jax.ShapeDtypeStruct((b, r, r, 3), jnp.float32)
    words = {}
    if config.model.uses_word_attention:
        words = {"words": jax.ShapeDtypeStruct((b, WORDS_PER_CAPTION, sentence_dim), jnp.float32),
                 "word_mask": jax.ShapeDtypeStruct((b, WORDS_PER_CAPTION), bool)}
    pieces = step_pieces(config.model, generator, discriminator)
    needs_real = as_gan_loss(loss or LOSSES[config.train.loss]).g_needs_real

    def g_layers_at(batch: int) -> list[Layer]:
        shape = lambda *dims: jax.ShapeDtypeStruct((batch, *dims), jnp.float32)  # noqa: E731
        w = {k: jax.ShapeDtypeStruct((batch, *v.shape[1:]), v.dtype) for k, v in words.items()}
        return trace_layers(generator, g_vars, shape(z_dim), shape(sentence_dim), **w, train=True,
                            rngs={"ca": jax.random.key(0)})

    g_layers = g_layers_at(b)
    parts = {"generator": pass_flops(g_layers, 2, 1, 1)}
    if config.train.diversity_weight > 0:
        parts["generator_twins"] = pass_flops(g_layers_at((b + 1) // 2), 1, 1, 1)
    d_in = image
    if "d_input" in pieces:
        encoder = trace_calls(pieces["d_input"], image, frozen, trained=False)
        parts["d_input"] = pass_flops(encoder, 2 + needs_real, 0, 0) + pass_flops(encoder, 1, 1, 0)
        d_in = jax.eval_shape(pieces["d_input"], image, frozen)
    d2 = trace_layers(discriminator, d_vars, d_in, s, s, train=True)
    d1 = trace_layers(discriminator, d_vars, d_in, s, train=True)
    parts["d_update"] = pass_flops(d2, 1, 1, 1) + pass_flops(d1, 1, 1, 1)
    parts["g_loss_through_d"] = pass_flops(d1, 1, 1, 0)
    if needs_real:
        parts["g_loss_real_logits"] = pass_flops(d1, 1, 0, 0)
    if "g_loss_term" in pieces:
        term = trace_calls(pieces["g_loss_term"], image, s, frozen, trained=False)
        parts["g_loss_term"] = pass_flops(term, 1, 1, 0)
    return {**parts, "total": sum(parts.values()), "generator_forward": forward_flops(g_layers),
            "discriminator_forward": forward_flops(d1)}
