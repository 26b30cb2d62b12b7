"""DiffAugment: each op against a hand formula, gradients, determinism, the policy parser."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgan import augment

# One compiled program per (policy, shape) is faster than running the ops eagerly.
_augment = jax.jit(augment.diff_augment, static_argnames="policy")
_translate = jax.jit(augment.translate)
_cutout = jax.jit(augment.cutout, static_argnames="size")


# Most tests share this shape so the compiled programs are reused across them.
SHAPE = (8, 16, 16, 3)


def _images(shape=SHAPE, seed=0, dtype=jnp.float32):
    return jnp.asarray(np.random.default_rng(seed).uniform(-1, 1, shape), dtype)


def _roll_zero_fill(image, dy, dx):
    """np.roll by (dy, dx) on [H, W, C] with the wrapped-around rows/columns zeroed."""
    out = np.roll(image, (dy, dx), axis=(0, 1))
    if dy > 0:
        out[:dy] = 0
    elif dy < 0:
        out[dy:] = 0
    if dx > 0:
        out[:, :dx] = 0
    elif dx < 0:
        out[:, dx:] = 0
    return out


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_shape_and_dtype_kept(dtype):
    images = _images(dtype=dtype)
    out = _augment(jax.random.key(0), images)
    assert out.shape == images.shape and out.dtype == dtype
    assert np.all(np.isfinite(np.asarray(out, np.float32)))


def test_empty_policy_is_identity_and_unknown_op_is_a_clear_error():
    images = _images()
    assert augment.diff_augment(jax.random.key(0), images, "") is images
    assert augment.parse_policy("") == ()
    assert augment.parse_policy(" color , cutout ") == ("color", "cutout")
    with pytest.raises(ValueError, match="unknown DiffAugment op 'rotate'"):
        augment.parse_policy("color,rotate")


def test_same_key_same_output_different_key_different_output():
    images = _images()
    a = _augment(jax.random.key(1), images)
    b = _augment(jax.random.key(1), images)
    c = _augment(jax.random.key(2), images)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_examples_get_independent_draws():
    # One image repeated: independent per-example draws make the copies differ.
    images = jnp.broadcast_to(_images((1,) + SHAPE[1:]), SHAPE)
    for policy in ("color", "translation", "cutout"):
        out = np.asarray(_augment(jax.random.key(3), images, policy=policy))
        assert len({out[i].tobytes() for i in range(8)}) > 1, policy


def test_translate_matches_roll_with_zero_fill():
    images = _images((4, 6, 7, 2), seed=1)
    shift_x = np.array([2, -3, 0, 7])
    shift_y = np.array([1, 0, -6, -2])
    out = np.asarray(_translate(images, jnp.asarray(shift_x), jnp.asarray(shift_y)))
    for b in range(4):
        np.testing.assert_array_equal(out[b], _roll_zero_fill(np.asarray(images[b]), shift_y[b],
                                                              shift_x[b]))


def test_translate_on_a_hand_made_image():
    image = np.zeros((1, 4, 4, 1), np.float32)
    image[0, 0, 0, 0], image[0, 3, 3, 0] = 1.0, 2.0
    out = np.asarray(_translate(jnp.asarray(image), jnp.array([1]), jnp.array([2])))
    expected = np.zeros((4, 4), np.float32)
    expected[2, 1] = 1.0  # (0, 0) moved down 2, right 1; (3, 3) left the image.
    np.testing.assert_array_equal(out[0, :, :, 0], expected)


def test_translation_gradient_is_the_shifted_weights():
    images = _images((3, 6, 6, 2), seed=2)
    w = _images((3, 6, 6, 2), seed=3)
    shift_x, shift_y = jnp.array([1, -2, 0]), jnp.array([-1, 3, 2])
    grad = jax.grad(lambda x: jnp.sum(_translate(x, shift_x, shift_y) * w))(images)
    # The adjoint of a shift by s with zero fill is the shift by -s with zero fill.
    expected = _translate(w, -shift_x, -shift_y)
    np.testing.assert_array_equal(grad, expected)
    ones_grad = jax.grad(lambda x: jnp.sum(_translate(x, shift_x, shift_y)))(images)
    for b in range(3):
        ones = np.ones((6, 6, 2), np.float32)
        indicator = _roll_zero_fill(ones, -int(shift_y[b]), -int(shift_x[b]))
        np.testing.assert_array_equal(ones_grad[b], indicator)


def test_full_policy_gradient_is_finite_and_nonzero():
    images = _images(seed=4)
    w = _images(seed=5)
    def objective(x):
        return jnp.sum(augment.diff_augment(jax.random.key(0), x) * w)

    grad = jax.jit(jax.grad(objective))(images)
    assert np.all(np.isfinite(grad))
    assert np.any(np.asarray(grad) != 0)


def test_cutout_zeroes_the_expected_square():
    images = jnp.ones((3, 8, 8, 2))
    centres = jnp.array([[4, 4], [0, 7], [6, 1]])
    out = np.asarray(_cutout(images, centres, size=4))
    expected = np.ones((3, 8, 8, 2), np.float32)
    expected[0, 2:6, 2:6] = 0          # rows/cols centre - 2 ... centre + 1
    expected[1, 0:2, 5:8] = 0          # rows -2..1 and cols 5..8 clipped at the border
    expected[2, 4:8, 0:3] = 0
    np.testing.assert_array_equal(out, expected)
    odd = np.asarray(_cutout(jnp.ones((1, 8, 8, 1)), jnp.array([[3, 5]]), size=(3, 1)))
    expected = np.ones((1, 8, 8, 1), np.float32)
    expected[0, 2:5, 5] = 0
    np.testing.assert_array_equal(odd, expected)


def test_random_cutout_removes_at_most_a_quarter():
    images = jnp.ones(SHAPE)
    out = np.asarray(_augment(jax.random.key(9), images, policy="cutout"))
    zeroed = (out[..., 0] == 0).sum(axis=(1, 2))
    assert np.all(zeroed <= 64) and np.any(zeroed == 64) and np.all(zeroed > 0)


def test_random_translation_shifts_at_most_an_eighth():
    image = np.zeros(SHAPE, np.float32)
    image[:, 8, 8, :] = 1.0
    out = np.asarray(_augment(jax.random.key(4), jnp.asarray(image), policy="translation"))
    ys, xs = np.nonzero(out[..., 0])[1:]
    assert len(ys) == SHAPE[0]  # the dot never leaves a 16-pixel image when shifted by <= 2
    assert np.all(np.abs(ys - 8) <= 2) and np.all(np.abs(xs - 8) <= 2)
    assert len(set(zip(ys.tolist(), xs.tolist()))) > 2


def test_colour_ops_match_hand_formulas():
    images = _images((2, 3, 4, 3), seed=6)
    x = np.asarray(images, np.float64)
    factor = jnp.array([0.3, -0.2])
    np.testing.assert_allclose(augment.adjust_brightness(images, factor),
                               x + np.array([0.3, -0.2])[:, None, None, None], rtol=1e-6)
    factor = np.array([0.0, 1.7])
    mean_c = x.mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(augment.adjust_saturation(images, jnp.asarray(factor)),
                               (x - mean_c) * factor[:, None, None, None] + mean_c,
                               rtol=1e-5, atol=1e-6)
    factor = np.array([0.5, 1.25])
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(augment.adjust_contrast(images, jnp.asarray(factor)),
                               (x - mean) * factor[:, None, None, None] + mean,
                               rtol=1e-5, atol=1e-6)
    # Saturation 0 makes each pixel grey: all channels equal.
    grey = np.asarray(augment.adjust_saturation(images, jnp.zeros(2)))
    np.testing.assert_allclose(grey, np.broadcast_to(grey[..., :1], grey.shape), atol=1e-6)


def test_random_colour_factors_lie_in_the_papers_ranges():
    # Constant images isolate brightness: saturation and contrast leave a constant unchanged.
    images = jnp.zeros(SHAPE)
    offsets = []
    for seed in range(8):
        out = np.asarray(_augment(jax.random.key(seed), images, policy="color"))
        offsets.append(out[:, 0, 0, 0])
        np.testing.assert_allclose(out, np.broadcast_to(out[:, :1, :1, :1], out.shape), atol=1e-6)
    offsets = np.concatenate(offsets)
    assert offsets.min() >= -0.5 and offsets.max() <= 0.5 and offsets.std() > 0.2
