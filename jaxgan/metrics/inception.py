"""InceptionV3 in the FID variant, as a Flax (linen) module, with its weight file format.

``FIDInceptionV3`` computes what pytorch-fid's ``InceptionV3([3], use_fid_inception=True)``
computes, which is TensorFlow's FID graph ``pt_inception-2015-12-05``: torchvision's Inception3
trunk with the FID patches (the average pools of the A, C and first E blocks leave padding out
of the mean; the last E block max-pools its pool branch). It returns the 2048-d global average
pool (the FID features) and the 1008 logits of ``fc`` (the Inception Score). Written from the
architecture description; the parity tests compare it with pytorch-fid on random weights.

Inputs are NHWC float32 images in [-1, 1] at 299x299. pytorch-fid resizes [0, 1] images with
``F.interpolate(bilinear, align_corners=False)`` and then maps them to [-1, 1];
``resize_for_inception`` is that resizer (the two orders agree: bilinear weights sum to one),
and ``make_inception_fn`` chains it with the network.

Weight file format (``.safetensors``):

* one tensor per variable, float32, named by its path in the Flax variables joined with "/":
  ``params/Mixed_5b/branch1x1/conv/kernel`` [kh, kw, in, out], ``params/.../bn/scale`` and
  ``bias``, ``batch_stats/.../bn/mean`` and ``var``, ``params/fc/kernel`` [2048, 1008] and
  ``params/fc/bias``. Module names are those of the PyTorch state dict, so
  ``Mixed_5b.branch1x1.conv.weight`` [out, in, kh, kw] is ``params/Mixed_5b/branch1x1/conv/kernel``
  transposed, BatchNorm's weight/bias/running_mean/running_var are scale/bias/mean/var, and
  ``fc.weight`` [1008, 2048] is ``params/fc/kernel`` transposed;
* metadata: ``format`` = ``jaxgan-fid-inception-v3`` (required), ``source`` (where the weights
  came from) and, for converted files, ``source_sha256`` (of the file they were converted from).

Convert pytorch-fid's published ``pt_inception-2015-12-05-6726825d.pth`` once with::

    jaxgan convert-inception --pth pt_inception-2015-12-05-6726825d.pth \\
        --out fid_inception_v3.safetensors
"""

from __future__ import annotations

import argparse
import functools
import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxgan.errors import JaxganError
from jaxgan.text.hf import to_flax_layout, torch_shape

FORMAT = "jaxgan-fid-inception-v3"
INPUT_SIZE = 299
NUM_CLASSES = 1008
POOL_FEATURES = 2048
BN_EPSILON = 1e-3

Variables = dict[str, Any]


class InceptionWeightsError(JaxganError, ValueError):
    """A weights file (or state dict) that is missing, unreadable or does not fit the network."""


# --------------------------------------------------------------------------------------------
# The network


class _ConvBN(nn.Module):
    """torchvision's BasicConv2d: convolution without bias, BatchNorm (eps 1e-3), ReLU."""

    features: int
    kernel_size: tuple[int, int]
    strides: int = 1
    padding: tuple[int, int] = (0, 0)  # symmetric (rows, columns), as PyTorch's padding
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ph, pw = self.padding
        x = nn.Conv(self.features, self.kernel_size, strides=self.strides, padding=((ph, ph), (pw, pw)),
                    use_bias=False, precision=self.precision, name="conv")(x)
        x = nn.BatchNorm(use_running_average=True, epsilon=BN_EPSILON, name="bn")(x)
        return nn.relu(x)


def _max_pool_3x3_s2(x: jax.Array) -> jax.Array:
    # PyTorch's MaxPool2d(3, stride=2) floors the output size, which is VALID padding.
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding="VALID")


def _pool_3x3_same(x: jax.Array, kind: str) -> jax.Array:
    """3x3, stride 1, padding 1; "avg" leaves the padding out of the mean (TF's average pool)."""
    if kind == "max":
        return nn.max_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)))
    return nn.avg_pool(x, (3, 3), strides=(1, 1), padding=((1, 1), (1, 1)), count_include_pad=False)


def _cat(*branches: jax.Array) -> jax.Array:
    return jnp.concatenate(branches, axis=-1)


class _InceptionA(nn.Module):
    """Mixed_5b-d (FIDInceptionA): 1x1, 5x5, double 3x3 and pool branches at 35x35."""

    pool_features: int
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(_ConvBN, precision=self.precision)
        b1 = conv(64, (1, 1), name="branch1x1")(x)
        b5 = conv(48, (1, 1), name="branch5x5_1")(x)
        b5 = conv(64, (5, 5), padding=(2, 2), name="branch5x5_2")(b5)
        b3 = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(b3)
        b3 = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_3")(b3)
        bp = conv(self.pool_features, (1, 1), name="branch_pool")(_pool_3x3_same(x, "avg"))
        return _cat(b1, b5, b3, bp)


class _InceptionB(nn.Module):
    """Mixed_6a: the grid reduction 35x35 -> 17x17."""

    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(_ConvBN, precision=self.precision)
        b3 = conv(384, (3, 3), strides=2, name="branch3x3")(x)
        bd = conv(64, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(96, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = conv(96, (3, 3), strides=2, name="branch3x3dbl_3")(bd)
        return _cat(b3, bd, _max_pool_3x3_s2(x))


class _InceptionC(nn.Module):
    """Mixed_6b-e (FIDInceptionC): factorised 7x7 branches at 17x17."""

    channels_7x7: int
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(_ConvBN, precision=self.precision)
        c7 = self.channels_7x7
        row, col = dict(kernel_size=(1, 7), padding=(0, 3)), dict(kernel_size=(7, 1), padding=(3, 0))
        b1 = conv(192, (1, 1), name="branch1x1")(x)
        b7 = conv(c7, (1, 1), name="branch7x7_1")(x)
        b7 = conv(c7, **row, name="branch7x7_2")(b7)
        b7 = conv(192, **col, name="branch7x7_3")(b7)
        bd = conv(c7, (1, 1), name="branch7x7dbl_1")(x)
        bd = conv(c7, **col, name="branch7x7dbl_2")(bd)
        bd = conv(c7, **row, name="branch7x7dbl_3")(bd)
        bd = conv(c7, **col, name="branch7x7dbl_4")(bd)
        bd = conv(192, **row, name="branch7x7dbl_5")(bd)
        bp = conv(192, (1, 1), name="branch_pool")(_pool_3x3_same(x, "avg"))
        return _cat(b1, b7, bd, bp)


class _InceptionD(nn.Module):
    """Mixed_7a: the grid reduction 17x17 -> 8x8."""

    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(_ConvBN, precision=self.precision)
        b3 = conv(192, (1, 1), name="branch3x3_1")(x)
        b3 = conv(320, (3, 3), strides=2, name="branch3x3_2")(b3)
        b7 = conv(192, (1, 1), name="branch7x7x3_1")(x)
        b7 = conv(192, (1, 7), padding=(0, 3), name="branch7x7x3_2")(b7)
        b7 = conv(192, (7, 1), padding=(3, 0), name="branch7x7x3_3")(b7)
        b7 = conv(192, (3, 3), strides=2, name="branch7x7x3_4")(b7)
        return _cat(b3, b7, _max_pool_3x3_s2(x))


class _InceptionE(nn.Module):
    """Mixed_7b (FIDInceptionE_1, pool "avg") and Mixed_7c (FIDInceptionE_2, pool "max") at 8x8."""

    pool: str
    precision: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        conv = functools.partial(_ConvBN, precision=self.precision)
        row, col = dict(kernel_size=(1, 3), padding=(0, 1)), dict(kernel_size=(3, 1), padding=(1, 0))
        b1 = conv(320, (1, 1), name="branch1x1")(x)
        b3 = conv(384, (1, 1), name="branch3x3_1")(x)
        b3 = _cat(conv(384, **row, name="branch3x3_2a")(b3), conv(384, **col, name="branch3x3_2b")(b3))
        bd = conv(448, (1, 1), name="branch3x3dbl_1")(x)
        bd = conv(384, (3, 3), padding=(1, 1), name="branch3x3dbl_2")(bd)
        bd = _cat(conv(384, **row, name="branch3x3dbl_3a")(bd), conv(384, **col, name="branch3x3dbl_3b")(bd))
        bp = conv(192, (1, 1), name="branch_pool")(_pool_3x3_same(x, self.pool))
        return _cat(b1, b3, bd, bp)


class FIDInceptionV3(nn.Module):
    """InceptionV3 as in TensorFlow's FID graph (pytorch-fid's FID Inception), inference only.

    BatchNorm always uses the stored statistics (collection ``batch_stats``). ``precision``
    defaults to HIGHEST so that accelerators do not silently drop to TF32/bf16 passes in the
    convolutions: the features feed a metric that must not depend on the hardware.
    """

    precision: Any = jax.lax.Precision.HIGHEST

    @nn.compact
    def __call__(self, images: jax.Array) -> dict[str, jax.Array]:
        """Features of a batch.

        Args:
          images: [N, 299, 299, 3] float images in [-1, 1] (the network is convolutional and
            runs at any size from 75x75, but FID is defined at 299x299).

        Returns:
          {"pool": [N, 2048] global average pool (FID features),
           "logits": [N, 1008] the ``fc`` layer (Inception Score)}, float32.
        """
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected NHWC images with 3 channels, got shape {images.shape}")
        p = self.precision
        conv = functools.partial(_ConvBN, precision=p)
        x = jnp.asarray(images, jnp.float32)
        x = conv(32, (3, 3), strides=2, name="Conv2d_1a_3x3")(x)  # 149x149
        x = conv(32, (3, 3), name="Conv2d_2a_3x3")(x)  # 147x147
        x = conv(64, (3, 3), padding=(1, 1), name="Conv2d_2b_3x3")(x)
        x = _max_pool_3x3_s2(x)  # 73x73
        x = conv(80, (1, 1), name="Conv2d_3b_1x1")(x)
        x = conv(192, (3, 3), name="Conv2d_4a_3x3")(x)  # 71x71
        x = _max_pool_3x3_s2(x)  # 35x35
        x = _InceptionA(32, p, name="Mixed_5b")(x)
        x = _InceptionA(64, p, name="Mixed_5c")(x)
        x = _InceptionA(64, p, name="Mixed_5d")(x)
        x = _InceptionB(p, name="Mixed_6a")(x)  # 17x17
        x = _InceptionC(128, p, name="Mixed_6b")(x)
        x = _InceptionC(160, p, name="Mixed_6c")(x)
        x = _InceptionC(160, p, name="Mixed_6d")(x)
        x = _InceptionC(192, p, name="Mixed_6e")(x)
        x = _InceptionD(p, name="Mixed_7a")(x)  # 8x8
        x = _InceptionE("avg", p, name="Mixed_7b")(x)
        x = _InceptionE("max", p, name="Mixed_7c")(x)
        pool = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(NUM_CLASSES, precision=p, name="fc")(pool)
        return {"pool": pool, "logits": logits}


def resize_for_inception(images: jax.Array, size: int = INPUT_SIZE) -> jax.Array:
    """The pinned FID resizer: bilinear, half-pixel centres, edge clamping, no antialiasing.

    Equals PyTorch's ``F.interpolate(x, (size, size), mode="bilinear", align_corners=False)``
    (what pytorch-fid uses) for up- and downsampling; images already at ``size`` pass unchanged.

    Args:
      images: [N, H, W, C] float images.
      size: the output height and width.

    Returns:
      [N, size, size, C] float32.
    """
    images = jnp.asarray(images, jnp.float32)
    if images.shape[1:3] == (size, size):
        return images
    shape = (images.shape[0], size, size, images.shape[3])
    return jax.image.resize(images, shape, method="bilinear", antialias=False,
                            precision=jax.lax.Precision.HIGHEST)


def make_inception_fn(module: FIDInceptionV3, size: int = INPUT_SIZE) -> Callable[[Variables, jax.Array], dict]:
    """A jitted ``fn(variables, images) -> {"pool", "logits"}`` for [-1, 1] images of any size.

    Resizes with ``resize_for_inception`` then applies ``module``. Pure: the caller may shard
    the batch over devices; each new input shape compiles once.
    """

    @jax.jit
    def fn(variables: Variables, images: jax.Array) -> dict[str, jax.Array]:
        return module.apply(variables, resize_for_inception(images, size))

    return fn


# --------------------------------------------------------------------------------------------
# Variables <-> files and PyTorch state dicts

_TORCH_LEAF = {("params", "kernel"): "weight", ("params", "scale"): "weight", ("params", "bias"): "bias",
               ("batch_stats", "mean"): "running_mean", ("batch_stats", "var"): "running_var"}


@functools.lru_cache(maxsize=1)
def variable_shapes() -> dict[str, tuple[int, ...]]:
    """``{"params/.../kernel": shape, ...}`` of ``FIDInceptionV3``, in module order."""
    abstract = jax.eval_shape(FIDInceptionV3().init, jax.random.key(0),
                              jax.ShapeDtypeStruct((1, INPUT_SIZE, INPUT_SIZE, 3), jnp.float32))
    flat = traverse_util.flatten_dict(abstract, sep="/")
    return {key: tuple(leaf.shape) for key, leaf in flat.items()}


def torch_name(key: str) -> str:
    """PyTorch state-dict name of a variable: ``params/A/b/conv/kernel`` -> ``A.b.conv.weight``."""
    collection, *modules, leaf = key.split("/")
    return ".".join(modules + [_TORCH_LEAF[collection, leaf]])


def _more(names: list[str]) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""


def _checked(flat: dict[str, np.ndarray], source: str) -> Variables:
    """Nested float32 variables from flat "/"-keyed arrays, or an error naming the first bad key."""
    expected = variable_shapes()
    missing = [k for k in expected if k not in flat]
    if missing:
        raise InceptionWeightsError(f"{source}: missing tensor {missing[0]}{_more(missing)}")
    extra = [k for k in flat if k not in expected]
    if extra:
        raise InceptionWeightsError(f"{source}: unexpected tensor {extra[0]}{_more(extra)}")
    out = {}
    for key, shape in expected.items():
        value = np.asarray(flat[key])
        if value.shape != shape:
            raise InceptionWeightsError(f"{source}: {key} has shape {value.shape}, expected {shape}")
        if value.dtype != np.float32:
            raise InceptionWeightsError(f"{source}: {key} has dtype {value.dtype}, expected float32")
        out[key] = value
    return traverse_util.unflatten_dict(out, sep="/")


def variables_from_torch_state_dict(state_dict: dict[str, Any], source: str = "state dict") -> Variables:
    """Flax variables of ``FIDInceptionV3`` from pytorch-fid's FID Inception state dict.

    Args:
      state_dict: tensor name -> array (numpy, or anything ``np.asarray`` takes), e.g.
        ``Mixed_5b.branch1x1.conv.weight``. ``num_batches_tracked`` entries are ignored.
      source: what to call the state dict in errors.

    Returns:
      {"params": ..., "batch_stats": ...} of float32 numpy arrays.

    Raises:
      InceptionWeightsError: a tensor is missing, unexpected or mis-shaped (the first is named).
    """
    wanted = {torch_name(key): key for key in variable_shapes()}
    missing = [name for name in wanted if name not in state_dict]
    if missing:
        raise InceptionWeightsError(f"{source}: missing tensor {missing[0]}{_more(missing)}")
    extra = [n for n in state_dict if n not in wanted and not n.endswith("num_batches_tracked")]
    if extra:
        hint = (" (torchvision's ImageNet Inception? FID needs pytorch-fid's weights)"
                if "AuxLogits" in extra[0] else "")
        raise InceptionWeightsError(f"{source}: unexpected tensor {extra[0]}{_more(extra)}{hint}")
    flat = {}
    for name, key in wanted.items():
        value = np.asarray(state_dict[name], dtype=np.float32)
        leaf = key.rsplit("/", 1)[-1]
        expected = torch_shape(leaf, variable_shapes()[key])
        if value.shape != expected:
            raise InceptionWeightsError(f"{source}: {name} has shape {value.shape}, expected {expected}")
        flat[key] = np.ascontiguousarray(to_flax_layout(leaf, value))
    return _checked(flat, source)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_fid_inception(path: str | Path, variables: Variables, source: str = "unknown",
                       source_sha256: str | None = None) -> str:
    """Writes ``variables`` in the format above; returns the sha256 of the written file.

    Raises:
      InceptionWeightsError: the variables do not fit ``FIDInceptionV3``.
    """
    from safetensors.numpy import save_file

    flat = traverse_util.flatten_dict(jax.device_get(variables), sep="/")
    flat = {k: np.asarray(v, np.float32) for k, v in flat.items()}
    _checked(flat, "variables")
    metadata = {"format": FORMAT, "source": str(source)}
    if source_sha256:
        metadata["source_sha256"] = source_sha256
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in flat.items()}, str(path), metadata=metadata)
    return file_sha256(path)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def load_fid_inception(path: str | Path) -> tuple[FIDInceptionV3, Variables, str]:
    """Loads a weights file in the format above.

    Returns:
      (module, variables, sha256): variables are {"params", "batch_stats"} of float32 numpy
      arrays; sha256 is that of the file, to pin the feature network in metric reports.

    Raises:
      InceptionWeightsError: the file is missing, not this format, or a tensor is missing,
        unexpected or mis-shaped (one line, naming the first offending key).
    """
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise InceptionWeightsError(f"FID Inception weights {path} do not exist (convert pytorch-fid's "
                                    "weights with: jaxgan convert-inception)")
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = f.metadata() or {}
            if metadata.get("format") != FORMAT:
                raise InceptionWeightsError(f"{path}: format {metadata.get('format')!r} is not {FORMAT!r}")
            flat = {key: f.get_tensor(key) for key in f.keys()}
    except InceptionWeightsError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        raise InceptionWeightsError(f"{path} is not a readable safetensors file ({_one_line(e)})") from None
    return FIDInceptionV3(), _checked(flat, str(path)), file_sha256(path)


def convert_pytorch_fid_weights(pth_path: str | Path, out_path: str | Path) -> str:
    """Converts pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``; returns the output's sha256.

    Needs torch, imported here only: it is not a dependency of jaxgan.

    Raises:
      InceptionWeightsError: torch is missing, the file is missing or not a state dict of the
        FID Inception.
    """
    pth_path = Path(pth_path)
    if not pth_path.is_file():
        raise InceptionWeightsError(f"{pth_path} does not exist")
    try:
        import torch
    except ImportError:
        raise InceptionWeightsError("converting .pth weights needs PyTorch (pip install torch)") from None
    try:
        state = torch.load(str(pth_path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise InceptionWeightsError(f"{pth_path} is not a PyTorch weights file ({_one_line(e)})") from None
    if not isinstance(state, dict):
        raise InceptionWeightsError(f"{pth_path} holds a {type(state).__name__}, not a state dict")
    arrays = {name: value.detach().to(torch.float32).numpy() for name, value in state.items()
              if isinstance(value, torch.Tensor) and not name.endswith("num_batches_tracked")}
    variables = variables_from_torch_state_dict(arrays, source=str(pth_path))
    return save_fid_inception(out_path, variables, source=pth_path.name, source_sha256=file_sha256(pth_path))


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``jaxgan convert-inception``."""
    parser = argparse.ArgumentParser(description="Convert pytorch-fid's .pth FID InceptionV3 weights to "
                                                 "jaxgan's .safetensors.")
    parser.add_argument("--pth", required=True, help="pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("--out", required=True, help="the .safetensors file to write")
    return parser


def run(args: argparse.Namespace) -> int:
    """``jaxgan convert-inception --pth FILE --out FILE``: converts and prints the output's sha256."""
    sha256 = convert_pytorch_fid_weights(args.pth, args.out)
    print(f"wrote {args.out} sha256 {sha256}")
    return 0
