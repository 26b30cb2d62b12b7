"""Parity of the Flax FID Inception with pytorch-fid (random weights), the resizer, the file format.

The reference is pytorch-fid's own ``fid_inception_v3`` and ``InceptionV3`` wrapper; only its
weight download is replaced by a state dict of random weights. Forward passes at 299x299 cost
~6 GFLOPs an image, so one converted model serves every test and batches are tiny.
"""

import math
import subprocess
import sys

import jax
import numpy as np
import pytest
import pytorch_fid.inception
import torch
import torch.nn.functional as F
import torchvision
from safetensors import safe_open
from safetensors.numpy import save_file

from jaxgan import cli
from jaxgan.metrics import inception
from jaxgan.metrics.inception import InceptionWeightsError

# Relative to the feature scale (max |reference|).
TOLERANCE = 1e-4


def _random_state_dict(seed: int) -> dict[str, torch.Tensor]:
    """Random weights in the layout of the FID Inception (torchvision's Inception3, 1008 classes).

    Conv and linear weights are He-scaled and BatchNorm statistics moderate, so activations stay
    near unit scale through the ~100 layers and every layer changes the features.
    """
    generator = torch.Generator().manual_seed(seed)
    template = torchvision.models.inception.Inception3(num_classes=1008, aux_logits=False, init_weights=False)

    def normal(shape, std=1.0, mean=0.0):
        return mean + std * torch.randn(shape, generator=generator)

    def uniform(shape, low, high):
        return low + (high - low) * torch.rand(shape, generator=generator)

    with torch.no_grad():
        for module in template.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                fan_in = math.prod(module.weight.shape[1:])
                module.weight.copy_(normal(module.weight.shape, math.sqrt(2.0 / fan_in)))
                if module.bias is not None:
                    module.bias.copy_(normal(module.bias.shape, 0.1))
            elif isinstance(module, torch.nn.BatchNorm2d):
                n = module.num_features
                module.weight.copy_(uniform(n, 0.5, 1.5))
                module.bias.copy_(normal(n, 0.2))
                module.running_mean.copy_(normal(n, 0.2))
                module.running_var.copy_(uniform(n, 0.5, 2.0))
    return template.state_dict()


@pytest.fixture(scope="module")
def reference():
    """pytorch-fid's FID Inception with random weights, and its InceptionV3 wrapper around it."""
    state_dict = _random_state_dict(seed=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pytorch_fid.inception, "load_state_dict_from_url", lambda *args, **kwargs: state_dict)
        network = pytorch_fid.inception.fid_inception_v3().eval()  # strict load_state_dict
        patch.setattr(pytorch_fid.inception, "fid_inception_v3", lambda: network)
        wrapper = pytorch_fid.inception.InceptionV3([3], resize_input=True, normalize_input=True).eval()
    return network, wrapper


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    """The reference's state dict saved as .pth, converted and loaded: (path, module, variables, sha256)."""
    network, _ = reference
    directory = tmp_path_factory.mktemp("inception")
    pth, out = directory / "pt_inception.pth", directory / "fid_inception.safetensors"
    torch.save(network.state_dict(), pth)
    written_sha256 = inception.convert_pytorch_fid_weights(pth, out)
    module, variables, sha256 = inception.load_fid_inception(out)
    assert sha256 == written_sha256 == inception.file_sha256(out)
    return out, module, variables, sha256


def _images(seed: int, size: int, count: int = 2) -> np.ndarray:
    """NCHW float32 images in [0, 1] with some smooth structure (not only noise)."""
    rng = np.random.default_rng(seed)
    grid = np.linspace(0, 1, size, dtype=np.float32)
    smooth = np.sin(6 * grid[:, None] + 4 * grid[None, :] + rng.uniform(0, 6, (count, 3, 1, 1)))
    return np.clip(0.5 + 0.35 * smooth + 0.15 * rng.normal(size=(count, 3, size, size)), 0, 1).astype(np.float32)


def _nhwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def _relative(ours, theirs) -> float:
    theirs = np.asarray(theirs)
    return float(np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max())


def test_network_matches_pytorch_fid_at_299(reference, converted):
    network, _ = reference
    _, module, variables, _ = converted
    images = 2 * _images(seed=0, size=299) - 1
    captured = {}
    hook = network.avgpool.register_forward_hook(lambda m, i, out: captured.update(pool=out.flatten(1)))
    try:
        with torch.no_grad():
            logits = network(torch.from_numpy(images)).numpy()
    finally:
        hook.remove()
    pool = captured["pool"].numpy()
    out = jax.jit(module.apply)(variables, _nhwc(images))
    assert out["pool"].shape == (2, 2048) and out["logits"].shape == (2, 1008)
    # The random network must produce informative features (not all zero or exploding).
    assert 0.05 < np.abs(pool).mean() < 100 and np.abs(pool[0] - pool[1]).max() > 1e-2 * np.abs(pool).max()
    pool_error, logits_error = _relative(out["pool"], pool), _relative(out["logits"], logits)
    print(f"\n299x299: pool max|diff|/max|ref| = {pool_error:.2e}, logits {logits_error:.2e}")
    assert pool_error < TOLERANCE and logits_error < TOLERANCE


def test_resize_and_network_match_pytorch_fid_wrapper_end_to_end(reference, converted):
    _, wrapper = reference
    _, module, variables, _ = converted
    images = _images(seed=1, size=64)  # [0, 1], as pytorch-fid takes them
    with torch.no_grad():
        (pool,) = wrapper(torch.from_numpy(images))
    pool = pool.flatten(1).numpy()
    out = inception.make_inception_fn(module)(variables, _nhwc(2 * images - 1))
    error = _relative(out["pool"], pool)
    print(f"\n64x64 end to end: pool max|diff|/max|ref| = {error:.2e}")
    assert error < TOLERANCE


@pytest.mark.parametrize("height,width", [(32, 32), (64, 64), (512, 512), (512, 384)])
def test_resizer_matches_f_interpolate(height, width):
    rng = np.random.default_rng(height + width)
    images = rng.uniform(-1, 1, (1, 3, height, width)).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(images), size=(299, 299), mode="bilinear", align_corners=False)
    ours = inception.resize_for_inception(_nhwc(images))
    assert ours.shape == (1, 299, 299, 3)
    assert np.abs(np.asarray(ours) - _nhwc(expected.numpy())).max() < 1e-5


def test_resizer_passes_299_unchanged():
    images = np.random.default_rng(0).uniform(-1, 1, (1, 299, 299, 3)).astype(np.float32)
    np.testing.assert_array_equal(inception.resize_for_inception(images), images)


def test_file_layout_and_torch_names(converted, reference):
    path, _, variables, _ = converted
    network, _ = reference
    with safe_open(str(path), framework="numpy") as f:
        metadata, keys = f.metadata(), set(f.keys())
        kernel = f.get_tensor("params/Mixed_5b/branch1x1/conv/kernel")
    assert metadata["format"] == "jaxgan-fid-inception-v3" and metadata["source"] == "pt_inception.pth"
    assert len(metadata["source_sha256"]) == 64
    assert "batch_stats/Mixed_7c/branch_pool/bn/var" in keys and "params/fc/kernel" in keys
    weight = network.state_dict()["Mixed_5b.branch1x1.conv.weight"].numpy()
    np.testing.assert_array_equal(kernel, weight.transpose(2, 3, 1, 0))
    assert inception.torch_name("batch_stats/Mixed_6a/branch3x3/bn/mean") == "Mixed_6a.branch3x3.bn.running_mean"
    np.testing.assert_array_equal(variables["params"]["fc"]["kernel"], network.fc.weight.detach().numpy().T)


def _rewrite(source, destination, change):
    with safe_open(str(source), framework="numpy") as f:
        tensors, metadata = {k: f.get_tensor(k) for k in f.keys()}, f.metadata()
    change(tensors, metadata)
    save_file(tensors, str(destination), metadata=metadata)
    return destination


def test_loader_errors_name_the_file_or_key(converted, tmp_path):
    path = converted[0]
    with pytest.raises(InceptionWeightsError, match="do not exist"):
        inception.load_fid_inception(tmp_path / "nope.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InceptionWeightsError, match="not a readable safetensors file"):
        inception.load_fid_inception(tmp_path / "junk.safetensors")

    key = "params/Mixed_6c/branch7x7_2/conv/kernel"
    cases = {
        "missing tensor params/Mixed_6c/branch7x7_2/conv/kernel": lambda t, m: t.pop(key),
        "unexpected tensor params/extra": lambda t, m: t.update({"params/extra": np.zeros(1, np.float32)}),
        r"params/Mixed_6c/branch7x7_2/conv/kernel has shape \(7, 1,": lambda t, m: t.update(
            {key: np.ascontiguousarray(t[key].transpose(1, 0, 2, 3))}),
        "format 'pt' is not": lambda t, m: m.update(format="pt"),
    }
    for i, (message, change) in enumerate(cases.items()):
        bad = _rewrite(path, tmp_path / f"bad{i}.safetensors", change)
        with pytest.raises(InceptionWeightsError, match=message) as info:
            inception.load_fid_inception(bad)
        assert "\n" not in str(info.value)


def test_state_dict_errors(reference):
    network, _ = reference
    state = {k: v.numpy() for k, v in network.state_dict().items()}
    with pytest.raises(InceptionWeightsError, match="unexpected tensor AuxLogits.fc.weight"):
        inception.variables_from_torch_state_dict({**state, "AuxLogits.fc.weight": np.zeros((1008, 768))})
    state["fc.weight"] = state["fc.weight"][:1000]  # torchvision's ImageNet head
    with pytest.raises(InceptionWeightsError, match=r"fc.weight has shape \(1000, 2048\), expected \(1008, 2048\)"):
        inception.variables_from_torch_state_dict(state)
    del state["Conv2d_1a_3x3.bn.running_var"]
    with pytest.raises(InceptionWeightsError, match="missing tensor Conv2d_1a_3x3.bn.running_var"):
        inception.variables_from_torch_state_dict(state)


def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    missing = tmp_path / "missing.pth"
    result = subprocess.run([sys.executable, "-m", "jaxgan", "convert-inception", "--pth", str(missing),
                             "--out", str(tmp_path / "out.safetensors")], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == f"error: {missing} does not exist"

    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 64)
    assert cli.main(["convert-inception", "--pth", str(garbage), "--out", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {garbage} is not a PyTorch weights file") and err.count("\n") == 1
