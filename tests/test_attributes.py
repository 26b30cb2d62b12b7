"""The shipped attribute classifier reads real shapes images, and the text-alignment metric
scores a perfect generator high and wrong generators as low as arithmetic says they should be."""

import json
import shutil

import numpy as np
import pytest

from jaxgan import pixels
from jaxgan.data import shapes
from jaxgan.metrics import attributes

COMBOS = shapes.all_combinations()
DIMS = tuple(len(v) for v in shapes.ATTRIBUTE_VALUES.values())


@pytest.fixture(scope="module")
def classifier():
    return attributes.load_attribute_classifier()


def test_shipped_files_are_small_and_report_near_perfect_heldout_accuracy(classifier):
    size = sum(f.stat().st_size for f in attributes.DEFAULT_DIR.iterdir())
    assert size < 2 * 2**20
    for split, acc in classifier.config["heldout_accuracy"].items():
        for name in shapes.ATTRIBUTES:
            assert acc[name] >= 0.995, (split, name, acc)


@pytest.mark.parametrize("resolution,count", [(32, 512), (64, 256)])
def test_classifier_reads_fresh_heldout_real_images(classifier, resolution, count):
    # A seed the shipped numbers did not use, so these exact images are new to everyone.
    data = shapes.batch(0, count, resolution, seed=2024, split="test")
    pred = attributes.predict_attributes(classifier, pixels.to_float(data["image"]))
    acc = attributes.attribute_accuracy(pred, data["attrs"])
    for name in shapes.ATTRIBUTES:
        assert acc[name] >= 0.99, (name, acc)
    # uint8 input is converted the same way.
    np.testing.assert_array_equal(attributes.predict_attributes(classifier, data["image"]), pred)


def test_uint8_to_float_range():
    out = pixels.to_float(np.array([0, 255], np.uint8))
    np.testing.assert_allclose(out, [-1.0, 1.0])
    assert out.dtype == np.float32


def test_attribute_accuracy_by_hand():
    true = np.array([[0, 0, 0, 0], [1, 2, 0, 3], [6, 1, 0, 8], [2, 0, 1, 4]])
    pred = np.array([[0, 0, 0, 0], [1, 2, 1, 3], [6, 1, 0, 7], [2, 0, 0, 5]])
    # colour and shape all right; size wrong in rows 1 and 3; position in rows 2 and 3;
    # only row 0 is right everywhere.
    assert attributes.attribute_accuracy(pred, true) == {
        "color": 1.0, "shape": 1.0, "size": 0.5, "position": 0.5, "all": 0.25}
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        attributes.attribute_accuracy(pred[:, :3], true[:, :3])


def test_perfect_generator_scores_near_one(classifier):
    def perfect(captions, attrs):
        assert captions == [shapes.caption(a, 2) for a in attrs]
        return pixels.to_float(shapes.images_for(attrs, 64, seed=5))

    acc = attributes.evaluate_text_alignment(perfect, template=2, seed=1, classifier=classifier)
    for name in (*shapes.ATTRIBUTES, "all"):
        assert acc[name] >= 0.99, (name, acc)


def test_generator_off_by_one_combination_scores_as_computed(classifier):
    def rolled(captions, attrs):
        index = np.ravel_multi_index(tuple(np.asarray(attrs).T), DIMS)
        return pixels.to_float(shapes.images_for(COMBOS[(index + 1) % len(COMBOS)], 32))

    acc = attributes.evaluate_text_alignment(rolled, classifier=classifier)
    # all_combinations is row-major with position fastest, so the next combination always has
    # another position, and another size / shape / colour only every 9 / 18 / 54 rows
    # (48 / 24 / 8 of the 432 rows).
    expected = {"color": 1 - 8 / 432, "shape": 1 - 24 / 432, "size": 1 - 48 / 432, "position": 0.0, "all": 0.0}
    assert attributes.attribute_accuracy(np.roll(COMBOS, -1, axis=0), COMBOS) == pytest.approx(expected)
    for name, value in expected.items():
        assert abs(acc[name] - value) <= 0.01, (name, acc)


def test_constant_black_generator_scores_chance(classifier):
    def black(captions, attrs):
        return -np.ones((len(attrs), 128, 128, 3), np.float32)

    acc = attributes.evaluate_text_alignment(black, num_per_combination=2, template=None, classifier=classifier)
    # One fixed prediction per attribute on a balanced set is right exactly 1/K of the time.
    expected = {"color": 1 / 8, "shape": 1 / 3, "size": 1 / 2, "position": 1 / 9, "all": 1 / 432}
    assert acc == pytest.approx(expected)


def test_generator_with_wrong_output_shape_is_a_clear_error(classifier):
    with pytest.raises(ValueError, match="generate returned shape"):
        attributes.evaluate_text_alignment(lambda c, a: np.zeros((1, 32, 32, 3)), classifier=classifier)


def _copy_shipped(tmp_path):
    path = tmp_path / "classifier"
    shutil.copytree(attributes.DEFAULT_DIR, path)
    return path


def test_corrupt_weights_are_a_clear_error(tmp_path):
    path = _copy_shipped(tmp_path)
    weights = path / attributes.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"weights\.msgpack are corrupt") as err:
        attributes.load_attribute_classifier(path)
    assert "\n" not in str(err.value)


def test_unreadable_weights_with_a_matching_hash_are_a_clear_error(tmp_path):
    import hashlib

    path = _copy_shipped(tmp_path)
    truncated = (path / attributes.WEIGHTS_FILE).read_bytes()[:100]
    (path / attributes.WEIGHTS_FILE).write_bytes(truncated)
    config = json.loads((path / attributes.CONFIG_FILE).read_text())
    config["weights_sha256"] = hashlib.sha256(truncated).hexdigest()
    (path / attributes.CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"weights\.msgpack are unreadable"):
        attributes.load_attribute_classifier(path)


def test_missing_or_broken_files_are_clear_errors(tmp_path):
    path = _copy_shipped(tmp_path)
    (path / attributes.CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is invalid"):
        attributes.load_attribute_classifier(path)
    (path / attributes.CONFIG_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        attributes.load_attribute_classifier(path)
    path = _copy_shipped(tmp_path / "again")
    (path / attributes.WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=r"weights\.msgpack"):
        attributes.load_attribute_classifier(path)
