"""The PyTorch reference of jaxgan's training step, and its benchmark.

``TorchStep`` does what ``jaxgan.step.make_train_step`` does, in the same order: G forward
once; D update on (real, caption) vs (fake, caption) and (real, wrong caption); G update
against the updated D through the kept G graph; EMA of G's params with warm-up; one
train-mode forward of the EMA generator for its BatchNorm statistics. ``benchmark_torch_step``
times it the way ``jaxgan.bench.benchmark_step`` times the jaxgan step.
"""

from __future__ import annotations

import contextlib
import copy
import os
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.torch_dcgan import build_torch_models, load_flax_params
from jaxgan.config import Config

Batch = dict[str, torch.Tensor]


class TorchLoss(NamedTuple):
    """The torch twin of ``jaxgan.losses.GANLoss``: D's loss of the (real, fake, wrong) logits,
    G's of the fake logits and, when ``g_needs_real``, the updated D's logits on the real pairs."""

    d: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    g: Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
    g_needs_real: bool = False


def _matching_aware(d_real: Callable, d_fake: Callable, g: Callable) -> TorchLoss:
    """``jaxgan.losses.matching_aware_d_loss``: l_real(real) + (l_fake(fake) + l_fake(wrong)) / 2."""
    return TorchLoss(lambda real, fake, wrong: d_real(real) + 0.5 * (d_fake(fake) + d_fake(wrong)),
                     lambda fake, real: g(fake))


def _relativistic(pair: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> TorchLoss:
    """``jaxgan.losses.matching_aware_relativistic``: D's loss (pair(real, fake) + pair(real,
    wrong)) / 2; G's loss is D's with the roles swapped, pair(fake, real)."""
    return TorchLoss(lambda real, fake, wrong: 0.5 * (pair(real, fake) + pair(real, wrong)),
                     lambda fake, real: pair(fake, real), g_needs_real=True)


def _rpgan(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """RpGAN (``jaxgan.losses.rpgan_d``): mean_b softplus(D(negative_b) - D(positive_b))."""
    return F.softplus(negative - positive).mean()


def _ragan(positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
    """RaSGAN (``jaxgan.losses.ragan_d``): each positive against the mean negative and each
    negative against the mean positive."""
    return F.softplus(negative.mean() - positive).mean() + F.softplus(negative - positive.mean()).mean()


TORCH_LOSSES = {
    "nonsaturating": _matching_aware(lambda x: F.softplus(-x).mean(), lambda x: F.softplus(x).mean(),
                                     lambda x: F.softplus(-x).mean()),
    "hinge": _matching_aware(lambda x: F.relu(1.0 - x).mean(), lambda x: F.relu(1.0 + x).mean(),
                             lambda x: -x.mean()),
    "rpgan": _relativistic(_rpgan),
    "ragan": _relativistic(_ragan),
}


def _global_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """L2 norm over a list of tensors (``optax.tree.norm``), without a host sync."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)))


def _adam(params: list[torch.Tensor], lr: float, betas: tuple[float, float], impl: str) -> torch.optim.Adam:
    """Adam as optax.adam (eps 1e-8, no weight decay) with a multi-tensor implementation."""
    kwargs = {"fused": {"fused": True}, "foreach": {"foreach": True}, "single": {"foreach": False}}[impl]
    return torch.optim.Adam(params, lr=lr, betas=betas, eps=1e-8, **kwargs)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class TorchStep:
    """jaxgan's default training step in PyTorch, for benchmarks and parity tests.

    Options to give torch its best shot: ``compile`` (``torch.compile`` of G, D and the EMA
    G; if compiling fails the step falls back to eager and says so in ``compile_error``),
    ``channels_last`` memory format, ``config.model.dtype=bfloat16`` (autocast, float32
    params, like jaxgan), ``adam`` in {"fused", "foreach", "single"}, and ``subpixel``
    (resize + 3x3 conv blocks computed as four 2x2 convs, as jaxgan's ``ResizeConv`` does).
    """

    def __init__(self, config: Config, sentence_dim: int = 128, *, device: str | torch.device | None = None,
                 compile: bool = False, channels_last: bool = False, adam: str = "fused",
                 subpixel: bool = False, norm_metrics: bool = True, seed: int = 0):
        self.config = config
        self.device = torch.device(device) if device is not None else default_device()
        self.channels_last = channels_last
        self.dtype = config.model.dtype
        self.norm_metrics = norm_metrics
        self.loss = TORCH_LOSSES[config.train.loss]
        self.step = 0
        torch.manual_seed(seed)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        g, d = build_torch_models(config.model, sentence_dim, subpixel)
        self.generator = g.to(self.device, memory_format=fmt).train()
        self.discriminator = d.to(self.device, memory_format=fmt).train()
        self.ema_generator = copy.deepcopy(self.generator).requires_grad_(False)
        self._g_params = list(self.generator.parameters())
        self._d_params = list(self.discriminator.parameters())
        self._ema_params = list(self.ema_generator.parameters())
        t = config.train
        try:
            self.g_opt = _adam(self._g_params, t.g_lr, (t.beta1, t.beta2), adam)
            self.d_opt = _adam(self._d_params, t.d_lr, (t.beta1, t.beta2), adam)
        except (RuntimeError, ValueError):  # fused not supported on this device / dtype
            adam = "foreach"
            self.g_opt = _adam(self._g_params, t.g_lr, (t.beta1, t.beta2), adam)
            self.d_opt = _adam(self._d_params, t.d_lr, (t.beta1, t.beta2), adam)
        self.adam = adam
        self.subpixel = self.generator.subpixel
        self.compile = compile
        self.compile_error: str | None = None
        self._set_callables(compile)
        self._compile_pending = compile

    def _set_callables(self, compile: bool) -> None:
        wrap = (lambda m: torch.compile(m, dynamic=False)) if compile else (lambda m: m)
        self._g, self._d, self._ema = map(wrap, (self.generator, self.discriminator, self.ema_generator))

    def load_jaxgan_state(self, state: Any) -> None:
        """Copies params and BatchNorm statistics of a jaxgan ``GANState`` (G, D, EMA G).

        Optimizer moments are not copied: torch's Adam starts from zeros, as a fresh
        ``init_state`` does, so the two steps agree from a fresh state.
        """
        load_flax_params(self.generator, state.g_params, state.g_stats)
        load_flax_params(self.discriminator, state.d_params, state.d_stats)
        load_flax_params(self.ema_generator, state.ema_params, state.ema_stats)
        self.step = int(state.step)

    def batch_to_device(self, batch: dict[str, np.ndarray]) -> Batch:
        """A numpy batch (uint8 images NHWC, float32 sentences) as tensors on the device."""
        # torch.tensor copies: arrays from jax are read-only, which torch.from_numpy warns about.
        return {k: torch.tensor(np.asarray(v), device=self.device) for k, v in batch.items()}

    def _autocast(self):
        if self.dtype == "bfloat16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def __call__(self, batch: Batch, z: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """One step; ``z`` [B, Z] overrides the noise (for parity tests). Metrics stay on device."""
        if not self._compile_pending:
            return self._step(batch, z)
        # A compile failure shows up on the first call, possibly halfway through the step:
        # keep a copy of everything the step mutates so eager can redo it from the same state.
        saved = copy.deepcopy((self.generator.state_dict(), self.discriminator.state_dict(),
                               self.ema_generator.state_dict(), self.g_opt.state_dict(),
                               self.d_opt.state_dict(), self.step))
        try:
            return self._step(batch, z)
        except Exception as e:  # noqa: BLE001 - any compiler error means: fall back to eager
            self.compile_error = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            warnings.warn(f"torch.compile failed, falling back to eager: {self.compile_error}", stacklevel=2)
            g, d, ema, g_opt, d_opt, self.step = saved
            self.generator.load_state_dict(g)
            self.discriminator.load_state_dict(d)
            self.ema_generator.load_state_dict(ema)
            self.g_opt.load_state_dict(g_opt)
            self.d_opt.load_state_dict(d_opt)
            self.discriminator.requires_grad_(True)
            self.compile = False
            self._set_callables(False)
            return self._step(batch, z)
        finally:
            self._compile_pending = False

    def _step(self, batch: Batch, z: torch.Tensor | None) -> dict[str, torch.Tensor]:
        # uint8 NHWC -> float NCHW in [-1, 1]; the permuted view is already channels_last.
        real = batch["image"].permute(0, 3, 1, 2).float() / 127.5 - 1.0
        if not self.channels_last:
            real = real.contiguous()
        sentence, wrong_sentence = batch["sentence"], batch["wrong_sentence"]
        if z is None:
            z = torch.randn(real.shape[0], self.config.model.z_dim, device=self.device)
        metrics: dict[str, torch.Tensor] = {}

        # G forward once; its graph is kept for the G update after D has moved.
        with self._autocast():
            fake = self._g(z, sentence)

        # --- D update: (real, caption) real; (fake, caption) and (real, wrong caption) fake.
        with self._autocast():
            real_logits, wrong_logits = self._d(real, sentence, wrong_sentence)
            fake_logits = self._d(fake.detach(), sentence)
        loss = self.loss
        d_loss = loss.d(real_logits, fake_logits, wrong_logits)
        self.d_opt.zero_grad(set_to_none=True)
        d_loss.backward()
        self._optimizer_step(self.d_opt, self._d_params, "d", metrics)

        # --- G update against the updated D; D's statistics from this pass are discarded and
        # its params need no gradient (requires_grad off prunes their backward).
        self.discriminator.requires_grad_(False)
        real_logits_g = None
        if loss.g_needs_real:
            # A relativistic G loss ranks the fakes against the updated D on the real batch:
            # a constant for G.
            with torch.no_grad(), self._autocast():
                real_logits_g = self._d(real, sentence, update_stats=False)
        with self._autocast():
            g_logits = self._d(fake, sentence, update_stats=False)
        g_loss = loss.g(g_logits, real_logits_g)
        self.g_opt.zero_grad(set_to_none=True)
        g_loss.backward()
        self.discriminator.requires_grad_(True)
        self._optimizer_step(self.g_opt, self._g_params, "g", metrics)

        # --- EMA with warm-up, then the EMA generator's own BatchNorm statistics.
        ema_decay = self.config.train.ema_decay
        decay = min(ema_decay, (1.0 + self.step) / (10.0 + self.step))
        with torch.no_grad():
            torch._foreach_lerp_(self._ema_params, self._g_params, 1.0 - decay)
            with self._autocast():
                self._ema(z, sentence)
        self.step += 1

        metrics.update({"d_loss": d_loss.detach(), "g_loss": g_loss.detach(),
                        "d_real_logit": real_logits.detach().mean(),
                        "d_fake_logit": fake_logits.detach().mean(),
                        "d_wrong_logit": wrong_logits.detach().mean()})
        return metrics

    def _optimizer_step(self, opt: torch.optim.Optimizer, params: list[torch.Tensor], name: str,
                        metrics: dict[str, torch.Tensor]) -> None:
        """``opt.step()`` plus the grad / update / param norms jaxgan reports."""
        if not self.norm_metrics:
            opt.step()
            return
        with torch.no_grad():
            metrics[f"{name}_grad_norm"] = _global_norm([p.grad for p in params])
            before = torch._foreach_mul(params, 1.0)  # a copy, to measure the update
            opt.step()
            torch._foreach_sub_(before, params)
            metrics[f"{name}_update_norm"] = _global_norm(before)
            metrics[f"{name}_param_norm"] = _global_norm(params)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_torch_step(config: Config, sentence_dim: int = 128, warmup: int = 3, steps: int = 20,
                         compile: bool = True, channels_last: bool = True,
                         device: str | torch.device | None = None, adam: str = "fused",
                         subpixel: bool = False, num_threads: int | None = None) -> dict[str, Any]:
    """Times ``TorchStep`` on jaxgan's synthetic batch, the way ``jaxgan.bench`` times jaxgan.

    The first step (with compilation) is timed alone, then ``warmup`` steps, then ``steps``
    steps each timed with a device synchronisation. CPU threads default to ``os.cpu_count()``.
    """
    from jaxgan.bench import synthetic_batch  # the same inputs as the jaxgan benchmark

    torch.set_num_threads(num_threads or os.cpu_count() or 1)
    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        # jaxgan's XLA GPU default lets float32 matmuls/convs use TF32; let torch do the same.
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.benchmark = True
    step = TorchStep(config, sentence_dim, device=device, compile=compile,
                     channels_last=channels_last, adam=adam, subpixel=subpixel)
    batch = step.batch_to_device(synthetic_batch(config, sentence_dim))

    t0 = time.perf_counter()
    step(batch)
    _sync(device)
    compile_and_first = time.perf_counter() - t0
    for _ in range(warmup):
        step(batch)
    _sync(device)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        metrics = step(batch)
        _sync(device)
        times.append(time.perf_counter() - t0)
    # Metrics stay on the device during the run; pull the last losses once, to check them.
    losses = {k: float(metrics[k]) for k in ("d_loss", "g_loss")}
    if not all(np.isfinite(list(losses.values()))):
        raise RuntimeError(f"the benchmarked torch step produced non-finite losses {losses}")
    median = statistics.median(times)
    result = {
        "framework": "torch", "torch_version": torch.__version__, "compile": step.compile,
        "channels_last": channels_last, "dtype": config.model.dtype, "device": str(device),
        "adam": step.adam, "subpixel": step.subpixel, "num_threads": torch.get_num_threads(),
        "resolution": config.model.resolution, "width": config.model.width,
        "d_width": config.model.discriminator_width,
        "batch_size": config.train.batch_size,
        "compile_and_first_step_s": compile_and_first,
        "step_ms_median": 1e3 * median, "step_ms_min": 1e3 * min(times), "step_ms_max": 1e3 * max(times),
        "images_per_s": config.train.batch_size / median, "timed_steps": steps, **losses,
    }
    if step.compile_error:
        result["compile_error"] = step.compile_error
    return result
