"""Shared test utilities."""

import jax
import numpy as np


def tree_max_abs_diff(a, b) -> float:
    diffs = jax.tree.map(lambda x, y: float(np.max(np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)))),
                         a, b)
    return max(jax.tree.leaves(diffs))


def trees_bitwise_equal(a, b) -> bool:
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(la) == len(lb) and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(la, lb))


def random_batch(batch_size: int, resolution: int, sentence_dim: int, seed: int) -> dict:
    """``bench.synthetic_batch`` for a batch size and resolution without a whole config."""
    from jaxgan.bench import synthetic_batch
    from jaxgan.presets import get_config

    config = get_config("tiny", [f"train.batch_size={batch_size}", f"model.resolution={resolution}"])
    return synthetic_batch(config, sentence_dim, seed)


def train_steps(cfg, sentence_dim: int, steps: int, batch_fn, count_traces=None):
    """Runs ``steps`` compiled steps of ``cfg`` from a fresh state on ``batch_fn(i)`` batches.

    Returns the single-copy final state (on the host) and each step's metrics as floats.
    ``count_traces`` (a list) gets one entry per trace of the step.
    """
    from jaxgan.models import build_models, step_pieces
    from jaxgan.parallel import data_fsdp_parallel
    from jaxgan.state import init_state
    from jaxgan.step import make_train_step

    dp = data_fsdp_parallel(cfg)
    g, d = build_models(cfg.model, *dp.batchnorm_layout(cfg.model.bn_sync))
    step = make_train_step(cfg, g, d, dp.axis_name, **step_pieces(cfg.model, g, d))
    if count_traces is not None:
        inner = step

        def step(state, batch):
            count_traces.append(1)  # runs only while tracing
            return inner(state, batch)

    compiled = dp.compile(step)
    state = dp.put_state(init_state(cfg, g, d, sentence_dim))
    history = []
    for i in range(steps):
        state, metrics = compiled(state, dp.put_batch(batch_fn(i)))
        history.append({k: float(v) for k, v in dp.to_host(metrics).items()})
    return dp.to_host(state), history


def adam_reach(learning_rate: float, b1: float, b2: float, steps: int) -> float:
    """The furthest Adam (Kingma & Ba 2015, bias-corrected) can move one parameter in ``steps`` steps.

    Step t moves a parameter by lr * |m_hat_t| / (sqrt(v_hat_t) + eps). With
    m_t = (1 - b1) sum_i b1^(t-i) g_i and v_t = (1 - b2) sum_i b2^(t-i) g_i^2, Cauchy-Schwarz
    gives |m_t| <= (1 - b1) sqrt(sum_k (b1^2 / b2)^k) sqrt(v_t / (1 - b2)), k = 0 .. t-1, so

        |m_hat_t| / sqrt(v_hat_t) <= (1 - b1) / (1 - b1^t) * sqrt(sum_k (b1^2 / b2)^k) * sqrt((1 - b2^t) / (1 - b2))

    whatever the gradients (eps > 0 only shrinks the step). This bounds a difference between two
    runs from the same init that rounding alone cannot: Adam turns a gradient of pure rounding
    noise into a step of about ``learning_rate``, whose sign depends on the machine.
    """
    total = 0.0
    for t in range(1, steps + 1):
        series = sum((b1 * b1 / b2) ** k for k in range(t))
        ratio = (1 - b1) / (1 - b1**t) * np.sqrt(series) * np.sqrt((1 - b2**t) / (1 - b2))
        total += learning_rate * ratio
    return float(total)


# A tiny run with schedules on the learning rates, the penalty weight and the EMA half-life,
# each over 32 images (steps 0, 1, 2 at batch 16: start, midpoint, end); plain SGD, so a
# vmapped sweep matches its members to rounding. tests/test_schedules.py and
# tests/test_sweep.py compile the same step from it (XLA's persistent cache compiles it once).
SCHEDULED_RUN = ["train.num_devices=1", "train.penalty=r1", "train.optimizer=sgd", "train.g_lr=2e-3",
                 "train.d_lr=2e-3", "train.g_lr_schedule=linear:1e-3@32", "train.d_lr_schedule=cosine:1e-3@32",
                 "train.penalty_weight_schedule=cosine:2@32", "train.ema_kimg=0.016",
                 "train.ema_kimg_schedule=linear:0.064@32"]


def max_rel_diff(ours, theirs) -> float:
    """max |ours - theirs| relative to the largest |theirs|: one scale for a whole output."""
    theirs = np.asarray(theirs)
    return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


def save_tiny_hf_clip(directory, vocab_size: int, eos: int, bos: int, pad: int, image_size: int = 32,
                      patch_size: int = 8, hidden: int = 32, layers: int = 2, max_positions: int = 16,
                      projection: int = 24, text: dict | None = None, vision: dict | None = None, seed: int = 0):
    """A random tiny transformers ``CLIPModel`` (torch seed ``seed``) saved to ``directory`` as
    transformers writes it; returns the PyTorch model in eval mode. ``text`` and ``vision``
    override fields of the two towers' configs (e.g. a narrower text tower than vision tower)."""
    import torch
    import transformers

    text = dict(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=37, num_hidden_layers=layers,
                num_attention_heads=4, max_position_embeddings=max_positions, eos_token_id=eos,
                bos_token_id=bos, pad_token_id=pad) | (text or {})
    vision = dict(hidden_size=hidden, intermediate_size=40, num_hidden_layers=layers, num_attention_heads=4,
                  image_size=image_size, patch_size=patch_size) | (vision or {})
    torch.manual_seed(seed)
    model = transformers.CLIPModel(transformers.CLIPConfig(text_config=text, vision_config=vision,
                                                           projection_dim=projection)).eval()
    model.save_pretrained(directory)
    return model


def save_galip_tiny_clip(directory):
    """The tiny CLIP of the GALIP tests (test_galip.py's constants): 40 px images in 8 px
    patches (a 5x5 grid), 2 vision layers of width 16, 1 text layer, joint width 24."""
    narrow = dict(intermediate_size=20, num_attention_heads=2)
    return save_tiny_hf_clip(directory, 40, eos=39, bos=1, pad=0, image_size=40, patch_size=8, hidden=16,
                             layers=2, text=dict(narrow, num_hidden_layers=1), vision=narrow)
