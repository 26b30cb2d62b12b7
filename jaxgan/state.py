"""GANState: the one pytree that training carries from step to step."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxgan import schedules
from jaxgan.augment import ada_init
from jaxgan.config import Config
from jaxgan.regularizers import DEFAULT_WEIGHTS

# The Flax collection in which G and D read the params of their frozen components (GALIP's CLIP
# image tower). Compiled programs take it as an argument, beside the state: an input the program
# reads, not a constant embedded in it, and never trained, averaged, checkpointed or swept.
FROZEN = "frozen"


def frozen_params(*modules: nn.Module) -> dict[str, Any]:
    """The params of the frozen components ``modules`` read from their ``FROZEN`` collection,
    merged (a module declares them as a ``frozen_params`` property; GALIP's G and D share
    ``{"clip_vision": tower params}``); {} for models without any.

    Example:
        frozen = jax.device_put(frozen_params(generator, discriminator))  # once
        state, metrics = jax.jit(train_step)(state, batch, frozen)
    """
    out: dict[str, Any] = {}
    for module in modules:
        out.update(getattr(module, "frozen_params", None) or {})
    return out


def with_frozen(variables: dict[str, Any], frozen: dict[str, Any] | None) -> dict[str, Any]:
    """``variables`` plus the ``FROZEN`` collection when there is one (else unchanged)."""
    return {**variables, FROZEN: frozen} if frozen else variables


def init_variables(module: nn.Module, rngs: dict[str, jax.Array], frozen: dict[str, Any] | None,
                   *args: Any, **kwargs: Any) -> dict[str, Any]:
    """``module.init(rngs, *args, **kwargs)``, reading ``frozen`` as its ``FROZEN`` collection
    (an input, so that a jitted init does not embed it); the result leaves it out."""
    if not frozen:
        return module.init(rngs, *args, **kwargs)
    _, variables = module.apply({FROZEN: frozen}, *args, rngs=rngs, mutable=True, **kwargs)
    return {k: v for k, v in variables.items() if k != FROZEN}


class GANState(struct.PyTreeNode):
    """Everything a training step reads and writes; a checkpoint is exactly this pytree.

    The optimizers' structure is static; their learning rates are leaves of their states
    (``optax.inject_hyperparams``), and so are the loss weights in
    ``hparams``: values a researcher sweeps are data, so ``jax.vmap`` over a stacked state
    trains several GANs with different values in one compiled step (``jaxgan.sweep``). The
    frozen text encoder is not here, nor are frozen components inside G and D (``frozen_params``).

    Example:
        state = init_state(config, generator, discriminator, sentence_dim=128)
        state.g_opt_state.hyperparams["learning_rate"]  # 2e-4, a leaf a sweep may vary
    """

    step: jax.Array
    g_params: Any
    d_params: Any
    g_stats: Any  # generator BatchNorm running statistics
    d_stats: Any
    g_opt_state: optax.OptState
    d_opt_state: optax.OptState
    ema_params: Any  # exponential moving average of g_params, used for sampling
    ema_stats: Any  # BatchNorm running statistics of the EMA generator itself
    key: jax.Array  # raw uint32 key data, so checkpoints need no typed-key handling
    skipped: jax.Array  # steps whose update was skipped for a non-finite loss or gradient
    streak: jax.Array  # consecutive skipped steps up to now (0 after a good step)
    # float32 scalars: penalty_weight, kl_weight, ema_decay; diversity_weight while the term is
    # on; with ADA its adapted p and r_t accumulator (``jaxgan.augment.ada_init``); with
    # train.ema_kimg, ema_kimg and ema_rampup; each schedule's <name>_start/_end/_over_images
    # (jaxgan.schedules). Keys are added only when their feature is on, so other runs'
    # checkpoints keep their structure.
    hparams: dict[str, jax.Array]
    g_tx: optax.GradientTransformation = struct.field(pytree_node=False)
    d_tx: optax.GradientTransformation = struct.field(pytree_node=False)


def make_optimizers(config: Config) -> tuple[optax.GradientTransformation, optax.GradientTransformation]:
    """Adam for each network with its own learning rate (DCGAN: lr 2e-4, betas (0.5, 0.999)),
    or plain SGD with ``train.optimizer=sgd``.

    The learning rate is injected into the optimizer state, where a sweep sets it per member
    and a schedule each step (``opt_state.hyperparams["learning_rate"]``); so is Adam's beta2,
    as ``hyperparams["b2"]``, when ``train.beta2_schedule`` is set.
    """
    t = config.train
    if t.optimizer == "sgd":
        sgd = optax.inject_hyperparams(optax.sgd, static_args=("momentum", "nesterov", "accumulator_dtype"))
        return sgd(learning_rate=t.g_lr), sgd(learning_rate=t.d_lr)
    # Only the learning rate is injected unless beta2 is scheduled: betas kept as constants leave
    # the default run's arithmetic, hence its numbers (and old checkpoints' leaves), as they were.
    static = ("b1", "eps", "eps_root", "mu_dtype", "nesterov")
    if "beta2" not in schedules.kinds(t):
        static += ("b2",)
    adam = optax.inject_hyperparams(optax.adam, static_args=static)
    return adam(learning_rate=t.g_lr, b1=t.beta1, b2=t.beta2), adam(learning_rate=t.d_lr, b1=t.beta1, b2=t.beta2)


def initial_hparams(config: Config) -> dict[str, jax.Array]:
    """The state's loss weights from the config: the gradient penalty's weight (the paper's
    when ``train.penalty_weight`` is 0; 0 without a penalty), CA's KL weight (0 without CA)
    and the EMA decay; the diversity term's weight, only when it is on (> 0); with
    ``train.ema_kimg`` (or its schedule) the EMA half-life and ramp-up too; and each configured
    schedule's start, end and length (``jaxgan.schedules``).

    The default config has exactly the first three: older checkpoints restore into it.
    """
    t = config.train
    penalty = 0.0 if t.penalty == "none" else (t.penalty_weight or DEFAULT_WEIGHTS[t.penalty])
    values = {"penalty_weight": penalty, "kl_weight": t.kl_weight if config.model.ca else 0.0,
              "ema_decay": t.ema_decay}
    if t.diversity_weight > 0:
        values["diversity_weight"] = t.diversity_weight
    if schedules.ema_half_life_mode(t):
        values |= {"ema_kimg": t.ema_kimg, "ema_rampup": t.ema_rampup,
                   "ema_decay": schedules.ema_decay_from_half_life(t.ema_kimg, 0.0, t.batch_size, t.ema_rampup)}
    starts = {"g_lr": t.g_lr, "d_lr": t.d_lr, "beta2": t.beta2, **values}
    for name, schedule in schedules.configured(t, starts).items():
        values |= schedule.leaves(name)
    return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}


def stepped_values(config: Config) -> set[str]:
    """The values the step itself sets each step (from schedules, or the EMA half-life): a
    resume leaves them to the step instead of setting them from the config."""
    t = config.train
    out = set(schedules.kinds(t))
    if schedules.ema_half_life_mode(t):
        out.add("ema_decay")
    return out


def with_scheduled_values(state: GANState, config: Config) -> GANState:
    """``state`` with the values in effect at its step: each schedule evaluated at
    ``step * train.batch_size`` images, written where it acts (the injected learning rates and
    beta2, ``hparams`` leaves), and the EMA decay from its half-life. The step calls it first.

    Without schedules or ``train.ema_kimg`` it returns ``state`` itself: the default step's
    arithmetic is untouched.
    """
    t = config.train
    kinds = schedules.kinds(t)
    half_life = schedules.ema_half_life_mode(t)
    if not kinds and not half_life:
        return state
    images = state.step.astype(jnp.float32) * t.batch_size
    hparams = dict(state.hparams)
    g_hyper, d_hyper = dict(state.g_opt_state.hyperparams), dict(state.d_opt_state.hyperparams)

    def put(hyper: dict, key: str, value: jax.Array) -> None:
        hyper[key] = value.astype(hyper[key].dtype)

    for name, kind in kinds.items():
        value = schedules.value_at(name, kind, state.hparams, images)
        if name == "g_lr":
            put(g_hyper, "learning_rate", value)
        elif name == "d_lr":
            put(d_hyper, "learning_rate", value)
        elif name == "beta2":
            put(g_hyper, "b2", value)
            put(d_hyper, "b2", value)
        else:
            hparams[name] = value
    if half_life:
        hparams["ema_decay"] = schedules.ema_decay_from_half_life(hparams["ema_kimg"], images, t.batch_size,
                                                                  hparams["ema_rampup"])
    return state.replace(g_opt_state=state.g_opt_state._replace(hyperparams=g_hyper),
                         d_opt_state=state.d_opt_state._replace(hyperparams=d_hyper), hparams=hparams)


def scheduled_metrics(state: GANState, config: Config, ema_decay: jax.Array) -> dict[str, jax.Array]:
    """The values in effect at this step, for metrics.jsonl and TensorBoard: both learning
    rates, Adam's beta2, the penalty weight and the EMA decay used (``ema_decay``)."""
    out = {"lr/generator": state.g_opt_state.hyperparams["learning_rate"],
           "lr/discriminator": state.d_opt_state.hyperparams["learning_rate"],
           "penalty_weight": state.hparams["penalty_weight"], "ema_decay": ema_decay}
    if config.train.optimizer == "adam":
        out["beta2"] = state.g_opt_state.hyperparams.get("b2", jnp.float32(config.train.beta2))
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def word_inputs(config: Config, words: jax.Array | None, word_mask: jax.Array | None) -> dict[str, jax.Array]:
    """The generator's word arguments: only models with word attention take them."""
    if not config.model.uses_word_attention:
        return {}
    if words is None or word_mask is None:
        raise ValueError("model.word_attention needs the captions' word embeddings and mask")
    return {"words": words, "word_mask": word_mask}


def init_state(config: Config, generator: nn.Module, discriminator: nn.Module,
               sentence_dim: int, word_dim: int | None = None, frozen: dict[str, Any] | None = None,
               variables: tuple[dict[str, Any], dict[str, Any]] | None = None) -> GANState:
    """Fresh state from ``config.train.seed``; pure, so it can run under ``jax.eval_shape``.

    ``word_dim`` (the text encoder's word-embedding width, default ``sentence_dim``) matters
    only to generators with word attention. ``frozen`` (``frozen_params``) is what G and D
    read of their frozen components; pass it as an argument of a jitted init (without it they
    read the components' own arrays, which jit embeds as constants). ``variables`` (G's and
    D's ``{"params": ..., "batch_stats": ...}``) replace the random init: an imported
    checkpoint's networks; everything else is as a fresh state's.

    Example:
        generator, discriminator = build_models(config.model)
        state = jax.jit(lambda: init_state(config, generator, discriminator, sentence_dim=128))()
    """
    key = jax.random.key(config.train.seed)
    g_key, d_key, train_key = jax.random.split(key, 3)
    res = config.model.resolution
    z = jnp.zeros((1, config.model.z_dim), jnp.float32)
    sentence = jnp.zeros((1, sentence_dim), jnp.float32)
    image = jnp.zeros((1, res, res, 3), jnp.float32)
    words = word_inputs(config, jnp.zeros((1, 1, word_dim or sentence_dim), jnp.float32), jnp.ones((1, 1), bool))
    if variables is not None:
        g_vars, d_vars = variables
    else:
        g_vars = init_variables(generator, {"params": g_key, "ca": g_key}, frozen, z, sentence, **words,
                                train=False)
        d_vars = init_variables(discriminator, {"params": d_key}, frozen, image, sentence, sentence, train=False)
    g_tx, d_tx = make_optimizers(config)
    return GANState(
        step=jnp.zeros((), jnp.int32),
        g_params=g_vars["params"],
        d_params=d_vars["params"],
        # DF-GAN has no BatchNorm (its D keeps spectral-norm vectors here when enabled).
        g_stats=g_vars.get("batch_stats", {}),
        d_stats=d_vars.get("batch_stats", {}),
        g_opt_state=g_tx.init(g_vars["params"]),
        d_opt_state=d_tx.init(d_vars["params"]),
        # A copy, not an alias: the step donates the state, and one buffer cannot be donated twice.
        ema_params=jax.tree.map(jnp.copy, g_vars["params"]),
        ema_stats=jax.tree.map(jnp.copy, g_vars.get("batch_stats", {})),
        key=jax.random.key_data(train_key),
        skipped=jnp.zeros((), jnp.int32),
        streak=jnp.zeros((), jnp.int32),
        # ADA's leaves are state the step adapts, not values the config sets (with_hyperparams).
        hparams={**initial_hparams(config), **(ada_init() if config.train.ada_target > 0 else {})},
        g_tx=g_tx,
        d_tx=d_tx,
    )


def abstract_state(config: Config, generator: nn.Module, discriminator: nn.Module,
                   sentence_dim: int, word_dim: int | None = None) -> GANState:
    """The state's shapes and dtypes (no arrays allocated): the target a checkpoint restores into."""
    return jax.eval_shape(lambda: init_state(config, generator, discriminator, sentence_dim, word_dim))


def with_hyperparams(state: GANState, config: Config) -> tuple[GANState, dict[str, tuple[float, float]]]:
    """``state`` with its sweepable values set from ``config``: both learning rates (in the
    optimizer states) and ``hparams`` (``initial_hparams``); what a resume under changed
    values trains with from the restored step on. Values the step sets itself
    (``stepped_values``: scheduled ones, a half-life's EMA decay) are left to it; their
    schedules' leaves are set, reported under the field's name (``g_lr_schedule``).

    Returns the state and ``{name: (old, new)}`` for each value that changed. A replaced leaf
    keeps the dtype and sharding of the one it replaces; unchanged leaves are the same arrays.

    Example:
        state, changed = with_hyperparams(restored, get_config("tiny", ["train.g_lr=1e-4"]))
        changed  # {"g_lr": (0.0002, 0.0001)}, as float32 values
    """
    changed: dict[str, tuple[float, float]] = {}

    def put(name: str, leaf: jax.Array, value: float) -> jax.Array:
        new = np.asarray(value, leaf.dtype)
        old = np.asarray(leaf.addressable_data(0))  # replicated scalar: any local copy is all of it
        if old == new:
            return leaf
        changed[name] = (float(old), float(new))
        return jax.make_array_from_callback(new.shape, leaf.sharding, lambda index: new[index])

    def with_lr(opt_state: Any, name: str, value: float) -> Any:
        hyper = dict(opt_state.hyperparams)
        hyper["learning_rate"] = put(name, hyper["learning_rate"], value)
        return opt_state._replace(hyperparams=hyper)

    def field_name(key: str) -> str:
        # A schedule's leaves are reported under the config field that set them.
        for suffix in schedules.LEAF_SUFFIXES:
            if key.endswith(suffix):
                return key.removesuffix(suffix) + ("" if suffix == "_start" else "_schedule")
        return key

    stepped = stepped_values(config)
    # Leaves the config does not set (ADA's adapted p) are kept as restored.
    hparams = {**state.hparams,
               **{k: state.hparams[k] if k in stepped else put(field_name(k), state.hparams[k], float(v))
                  for k, v in initial_hparams(config).items()}}
    g_opt_state, d_opt_state = state.g_opt_state, state.d_opt_state
    if "g_lr" not in stepped:
        g_opt_state = with_lr(g_opt_state, "g_lr", config.train.g_lr)
    if "d_lr" not in stepped:
        d_opt_state = with_lr(d_opt_state, "d_lr", config.train.d_lr)
    state = state.replace(g_opt_state=g_opt_state, d_opt_state=d_opt_state, hparams=hparams)
    return state, changed
