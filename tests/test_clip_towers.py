"""Both CLIP towers of a Hugging Face CLIPModel directory as frozen components.

Parity with transformers' PyTorch ``CLIPModel`` on a random tiny config: the text tower, the
vision tower's pooled and projected outputs, its hidden state after every layer, a run of a
slice of its layers, and GALIP's generator path (patch features in, a prompt token appended
before a layer). Then the differentiable preprocessing, the loader's errors and formats, and
that the towers' params never change under an optimizer.
"""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from helpers import max_rel_diff, save_tiny_hf_clip

from jaxgan.errors import JaxganError
from jaxgan.text import ClipTowers, load_clip, patch_grid, to_pixel_values
from jaxgan.text.clip_vision import CLIP_MEAN, CLIP_STD
from jaxgan.text.errors import TextEncoderError, TextEncoderNotFoundError

IMAGE_SIZE, PATCH, HIDDEN, LAYERS, VOCAB, EOS = 32, 8, 32, 2, 40, 39
# Float32 through two tiny layers agrees to about 1e-7 of the output's scale; 1e-5 leaves room
# for any CPU's summation order without hiding a wrong layer, norm or scale (those are O(1)).
TOLERANCE = 1e-5
pytestmark = pytest.mark.usefixtures("quick_compiles")  # tiny programs, each compiled once


@pytest.fixture(scope="module")
def hf_clip(tmp_path_factory):
    """A random tiny CLIPModel saved as transformers writes it, and the PyTorch model."""
    directory = tmp_path_factory.mktemp("clip")
    model = save_tiny_hf_clip(directory, VOCAB, eos=EOS, bos=1, pad=0, image_size=IMAGE_SIZE, patch_size=PATCH,
                              hidden=HIDDEN, layers=LAYERS)
    return directory, model


@pytest.fixture(scope="module")
def clip(hf_clip) -> ClipTowers:
    return load_clip(hf_clip[0])


def _jit(tower, **static):
    """``tower.apply`` compiled with its static arguments bound (eager Flax compiles op by op)."""
    return jax.jit(lambda params, *args: tower.apply(params, *args, **static))


def _pixels(n: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)


def _nchw(x) -> torch.Tensor:
    return torch.tensor(np.asarray(x)).permute(0, 3, 1, 2)


def test_text_tower_matches_transformers(hf_clip, clip):
    _, model = hf_clip
    rng = np.random.default_rng(1)
    ids = rng.integers(2, EOS, size=(3, 10))
    lengths = np.array([10, 6, 3])
    ids[np.arange(3), lengths - 1] = EOS
    mask = (np.arange(10)[None] < lengths[:, None]).astype(np.int32)
    # The bound method compiles as it is.
    out = jax.jit(clip.text.apply)(clip.text.params, jnp.asarray(ids), jnp.asarray(mask))
    with torch.no_grad():
        ref = model.text_model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
        embeds = model.text_projection(ref.pooler_output)
    assert clip.text.config.projection_dim == 24 and out.text_embeds.shape == (3, 24)
    # Padding positions differ by design (both compute them, neither reads them): compare real tokens.
    real = mask.astype(bool)
    assert max_rel_diff(np.asarray(out.last_hidden_state)[real], ref.last_hidden_state.numpy()[real]) < TOLERANCE
    assert max_rel_diff(out.pooler_output, ref.pooler_output) < TOLERANCE
    assert max_rel_diff(out.text_embeds, embeds) < TOLERANCE
    assert clip.logit_scale == pytest.approx(model.logit_scale.item())


def test_vision_tower_and_every_hidden_state_match_transformers(hf_clip, clip):
    _, model = hf_clip
    pixels = _pixels()
    out = _jit(clip.vision, hidden_layers=tuple(range(LAYERS + 1)))(clip.vision.params, pixels)
    with torch.no_grad():
        ref = model.vision_model(pixel_values=_nchw(pixels), output_hidden_states=True)
        embeds = model.visual_projection(ref.pooler_output)
    assert len(ref.hidden_states) == len(out.hidden_states) == LAYERS + 1
    errors = {"pooled": max_rel_diff(out.pooler_output, ref.pooler_output),
              "embeds": max_rel_diff(out.image_embeds, embeds),
              "last": max_rel_diff(out.last_hidden_state, ref.last_hidden_state)}
    errors.update({f"state {k}": max_rel_diff(ours, theirs) for k, (ours, theirs)
                   in enumerate(zip(out.hidden_states, ref.hidden_states, strict=True))})
    print("relative max error:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < TOLERANCE
    # Only the states asked for, in the order asked for.
    picked = _jit(clip.vision, hidden_layers=(2, 0))(clip.vision.params, pixels)
    assert [np.array_equal(a, b) for a, b in zip(picked.hidden_states, (out.hidden_states[2], out.hidden_states[0]),
                                                 strict=True)] == [True, True]
    with pytest.raises(ValueError, match=r"hidden_layers \[3\] are not in \[0, 2\]"):
        jax.eval_shape(_jit(clip.vision, hidden_layers=(3,)), clip.vision.params, pixels)


def test_a_slice_of_layers_runs_on_given_hidden_states(hf_clip, clip):
    _, model = hf_clip
    pixels = _pixels(2, seed=3)
    with torch.no_grad():
        ref = model.vision_model(pixel_values=_nchw(pixels), output_hidden_states=True)
        states = [s.numpy() for s in ref.hidden_states]
    slices = [(0, 1), (1, 2), (0, 2), (1, 1)]

    @jax.jit
    def pieces(params, states):
        runs = [clip.vision.apply(params, states[i], i, j, method="run_layers") for i, j in slices]
        return runs, clip.vision.apply(params, pixels, method="embed_pixels"), \
            clip.vision.apply(params, states[LAYERS], method="pool")

    runs, state0, (pooled, embeds) = pieces(clip.vision.params, states)
    for (start, stop), ours in zip(slices, runs, strict=True):
        assert max_rel_diff(ours, states[stop]) < TOLERANCE, (start, stop)
    assert max_rel_diff(state0, states[0]) < TOLERANCE
    with torch.no_grad():
        pooled_ref = model.vision_model.post_layernorm(torch.tensor(states[LAYERS][:, 0]))
        assert max_rel_diff(embeds, model.visual_projection(pooled_ref)) < TOLERANCE
    with pytest.raises(ValueError, match=r"layer slice \[1, 3\) is not within \[0, 2\]"):
        jax.eval_shape(lambda p, h: clip.vision.apply(p, h, 1, 3, method="run_layers"), clip.vision.params, states[1])


def test_galip_generator_path_matches_transformers(hf_clip, clip):
    """Bridge features enter as patch embeddings; a prompt token rides along through layer 1."""
    _, model = hf_clip
    rng = np.random.default_rng(4)
    grid_side = IMAGE_SIZE // PATCH
    grid = rng.normal(size=(2, grid_side, grid_side, HIDDEN)).astype(np.float32)
    prompt = rng.normal(size=(2, 1, HIDDEN)).astype(np.float32)

    @jax.jit
    def mapper(params, grid, prompt):
        h = clip.vision.apply(params, grid, method="embed_patches")
        h = clip.vision.apply(params, h, 0, 1, method="run_layers")
        h = clip.vision.apply(params, jnp.concatenate([h, prompt], axis=1), 1, 2, method="run_layers")[:, :-1]
        return patch_grid(h)

    ours = mapper(clip.vision.params, grid, prompt)

    vision = model.vision_model
    with torch.no_grad():
        x = torch.tensor(grid).reshape(2, -1, HIDDEN)
        x = torch.cat([vision.embeddings.class_embedding.expand(2, 1, HIDDEN), x], dim=1)
        x = vision.pre_layrnorm(x + vision.embeddings.position_embedding.weight[None])
        x = vision.encoder.layers[0](x, None)
        x = vision.encoder.layers[1](torch.cat([x, torch.tensor(prompt)], dim=1), None)[:, :-1]
        ref = x[:, 1:].reshape(2, grid_side, grid_side, HIDDEN).numpy()
    assert ours.shape == (2, grid_side, grid_side, HIDDEN)
    assert max_rel_diff(ours, ref) < TOLERANCE


def test_pixel_values_are_differentiable_and_match_torch_resizing():
    images = np.random.default_rng(5).uniform(-1, 1, size=(2, 16, 16, 3)).astype(np.float32)
    weights = np.random.default_rng(6).normal(size=(2, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    mean, std = np.array(CLIP_MEAN, np.float32), np.array(CLIP_STD, np.float32)

    # At the tower's size nothing is resampled: the affine map by hand, and its gradient 1 / (2 std).
    same = np.asarray(to_pixel_values(jnp.asarray(weights), IMAGE_SIZE))
    np.testing.assert_allclose(same, ((weights + 1) / 2 - mean) / std, rtol=1e-6, atol=1e-6)

    def loss(x):
        return jnp.sum(to_pixel_values(x, IMAGE_SIZE, method="bilinear") * weights)

    value, grad = jax.jit(jax.value_and_grad(loss))(jnp.asarray(images))
    # PyTorch: bilinear upsampling with half-pixel centres (align_corners=False), then CLIP's normalisation.
    x = _nchw(images).requires_grad_()
    up = torch.nn.functional.interpolate((x + 1) / 2, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear",
                                         align_corners=False)
    ref = (up - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]
    ref_loss = (ref * _nchw(weights)).sum()
    ref_loss.backward()
    assert max_rel_diff(to_pixel_values(jnp.asarray(images), IMAGE_SIZE, method="bilinear"),
                ref.detach().permute(0, 2, 3, 1).numpy()) < 1e-6
    assert float(value) == pytest.approx(ref_loss.item(), rel=1e-5)
    assert max_rel_diff(grad, x.grad.permute(0, 2, 3, 1).numpy()) < 1e-5
    # Pixels outside [-1, 1] still get gradients (nothing is clipped).
    assert np.all(np.asarray(jax.jit(jax.grad(loss))(jnp.asarray(images) * 3)) != 0)


def test_params_never_change_and_never_enter_an_optimizer(clip):
    """A step that trains an image through the frozen tower leaves the tower bitwise unchanged."""
    vision = clip.vision
    before = jax.tree.map(np.copy, vision.params)
    # The loader hands out read-only arrays: an in-place update fails instead of drifting.
    leaf = vision.params["post_layernorm"]["scale"]
    with pytest.raises(ValueError, match="read-only"):
        leaf += 1.0

    def loss(image, tower_params):
        out = vision.apply(tower_params, to_pixel_values(image, IMAGE_SIZE), hidden_layers=(1,))
        return jnp.mean(out.image_embeds ** 2) + jnp.mean(out.hidden_states[0] ** 2)

    optimizer = optax.adam(1e-2)

    @jax.jit
    def step(image, opt_state, tower_params):
        value, (grad, tower_grad) = jax.value_and_grad(loss, argnums=(0, 1))(image, tower_params)
        updates, opt_state = optimizer.update(grad, opt_state, image)
        return optax.apply_updates(image, updates), opt_state, value, grad, tower_grad

    image = jnp.asarray(_pixels(2, seed=7) * 0.5)[:, ::2, ::2]  # 16 px: resized inside the loss
    opt_state = optimizer.init(image)
    values = []
    for i in range(3):
        image, opt_state, value, grad, tower_grad = step(image, opt_state, vision.params)
        values.append(float(value))
        if i == 0:
            # stop_gradient inside apply: the tower's params get exact zeros, the image a real gradient.
            assert all(not np.any(g) for g in jax.tree.leaves(tower_grad))
            assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0
    assert values[-1] < values[0]  # the image did train
    # The optimizer holds moments of the image only, none of the tower.
    assert {x.shape for x in jax.tree.leaves(opt_state)} <= {image.shape, ()}
    same = jax.tree.map(lambda a, b: a.dtype == b.dtype and np.array_equal(a, b), vision.params, before)
    assert all(jax.tree.leaves(same))


def test_pytorch_bin_weights_load_alike(hf_clip, clip, tmp_path):
    directory, model = hf_clip
    # What transformers 4 wrote with safe_serialization=False (and older hub uploads hold): a
    # pickled state dict. transformers 5 always writes safetensors, so it is written by hand.
    shutil.copy(directory / "config.json", tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    other = load_clip(tmp_path)
    for ours, theirs in ((other.text.params, clip.text.params), (other.vision.params, clip.vision.params)):
        assert all(jax.tree.leaves(jax.tree.map(np.array_equal, ours, theirs)))
    assert other.weight_files == (tmp_path / "pytorch_model.bin",)


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert isinstance(error.value, JaxganError) and "\n" not in message
    return message


def test_missing_or_bad_directories_are_one_line_errors(hf_clip, tmp_path):
    with pytest.raises(TextEncoderNotFoundError) as e:
        load_clip(tmp_path / "nope")
    assert "does not exist" in _one_line(e)
    broken = shutil.copytree(hf_clip[0], tmp_path / "clip")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(TextEncoderError) as e:
        load_clip(broken)
    assert _one_line(e).startswith(f"cannot read {broken / 'model.safetensors'}")
    (broken / "model.safetensors").unlink()
    with pytest.raises(TextEncoderNotFoundError) as e:
        load_clip(broken)
    assert "has no model.safetensors (nor pytorch_model.bin)" in _one_line(e)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config["text_config"], "model_type": "clip_text_model"}))
    with pytest.raises(TextEncoderError) as e:
        load_clip(broken)
    assert "has no vision_config" in _one_line(e)
    (broken / "config.json").write_text("{")
    with pytest.raises(TextEncoderError) as e:
        load_clip(broken)
    assert "is not valid JSON" in _one_line(e)
    (broken / "config.json").unlink()
    with pytest.raises(TextEncoderNotFoundError) as e:
        load_clip(broken)
    assert "has no config.json" in _one_line(e)
