"""Within-caption diversity (metrics.diversity): hand-computed spread on toy features, identical
samples at 0, a generator that ignores its noise at ratio 0 beside a nonzero real value, caption
groups on a folder of class-like captions, and absent (not an error) where no caption is shared."""

import dataclasses

import numpy as np
import pytest
from PIL import Image
from test_evaluate_datasets import _tiny_network, folder  # noqa: F401  (a folder of class-like captions)

from jaxgan import pixels
from jaxgan.data import shapes
from jaxgan.data.folder import ImageFolderSource
from jaxgan.metrics.dataset_eval import EvalExamples, dataset_caption_groups
from jaxgan.metrics.diversity import within_group_diversity
from jaxgan.metrics.evaluate import ImageSource, drawn_caption_groups, evaluate
from jaxgan.metrics.protocol import EvalProtocol, ResolvedProtocol
from jaxgan.metrics.sharded import evaluation_mesh


def test_hand_computed_spread_and_pairwise_distance():
    features = np.array([[0.0, 0.0], [3.0, 4.0],  # centroid (1.5, 2): both 2.5 away, 5 apart
                         [1.0, 1.0], [1.0, 1.0], [1.0, 1.0],  # identical: 0 and 0
                         [9.0, 9.0]])  # a group of one says nothing about spread: left out
    groups = np.array([0, 0, 1, 1, 1, 2])
    out = within_group_diversity(features, groups)
    assert out == {"spread": pytest.approx((2.5 + 0) / 2), "pairwise": pytest.approx((5 + 0) / 2), "groups": 2.0}
    # Three members on a line at 0, 1, 2: distances to the centroid 1, 0, 1; pairs 1, 1, 2.
    line = within_group_diversity(np.array([[0.0], [1.0], [2.0]]), np.zeros(3))
    assert line["spread"] == pytest.approx(2 / 3) and line["pairwise"] == pytest.approx(4 / 3)
    assert np.isnan(within_group_diversity(features[:1], groups[:1])["spread"])


def test_identical_samples_have_no_diversity():
    same = np.tile(np.random.default_rng(0).normal(size=(1, 16)), (10, 1))
    out = within_group_diversity(same, np.zeros(10))
    assert out["pairwise"] == 0.0 and out["spread"] == pytest.approx(0.0, abs=1e-12) and out["groups"] == 1


def _noise_ignoring_generator(source: shapes.ShapesSource) -> ImageSource:
    """Draws each caption's object at its place with no jitter: one image per caption, like a
    conditional generator that ignores z; the protocol's own captions get the real images."""
    table = dict(zip(*source.labels(0, 5000)))

    def inputs_for(captions):
        return {"image": np.stack([shapes.render(table[c], source.resolution) for c in captions])}

    return ImageSource("noise-ignoring", {}, lambda _c, inputs: pixels.to_float(inputs["image"]),
                       lambda start, size: {"image": source.draw(start, size)["image"]}, source.labels,
                       inputs_for=inputs_for)


def test_a_generator_that_ignores_noise_has_ratio_zero(tmp_path):
    protocol = EvalProtocol(num_samples=64, num_reference=64, kid_subsets=2, kid_subset_size=32, is_splits=2,
                            fidelity_samples=64)
    source = _noise_ignoring_generator(shapes.ShapesSource(32, protocol.data_seed, protocol.split))
    result = evaluate(source, protocol, evaluation_mesh(1), _tiny_network(), cache_dir=tmp_path, progress=False,
                      per_device=32)
    m = result.metrics
    # K = 10 samples per caption caps N at 64 // 10 = 6 captions.
    assert m["diversity_groups"] == 6 and m["diversity_spread"] == 0 and m["diversity_pairwise"] == 0
    assert m["diversity_spread_ratio"] == 0 and m["diversity_spread_real"] > 0 and not result.notes
    # Its main samples are the real images themselves: fidelity at the ceiling.
    assert m["fidelity_iou_ratio"] == pytest.approx(1.0, abs=1e-3)


def test_real_groups_share_an_attribute_combination():
    source = shapes.ShapesSource(32, split="test")
    groups = drawn_caption_groups(source, count=5, per_group=4)
    assert len(groups.captions) == 5 and groups.real_group.tolist() == [g for g in range(5) for _ in range(4)]
    attrs = groups.real.captions(0, 20)[1]
    for g in range(5):
        assert len({tuple(a) for a in attrs[4 * g:4 * g + 4]}) == 1
    assert len({tuple(a) for a in attrs}) == 5


def test_folder_groups_by_caption_text_and_absent_when_none_is_shared(folder, tmp_path):  # noqa: F811
    protocol = EvalProtocol(dataset=str(folder), features="inception:unused", fit="crop", resolution=32,
                            num_samples=48, num_reference=48, kid_subsets=5, kid_subset_size=24, is_splits=4)
    groups = dataset_caption_groups(EvalExamples(ImageFolderSource(folder), protocol), count=3, per_group=10)
    assert len(groups.captions) == 3 and len(groups.real_group) == 30
    real_captions = groups.real.captions(0, 30)[0]
    assert all(len(set(real_captions[10 * g:10 * g + 10])) == 1 for g in range(3))
    # Captions written per image share nothing: no groups, and the evaluation notes it.
    unique = tmp_path / "unique"
    unique.mkdir()
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)).save(unique / f"{i}.png")
        (unique / f"{i}.txt").write_text(f"picture number {i}\n")
    protocol = dataclasses.replace(protocol, dataset=str(unique), num_samples=5, num_reference=5, kid_subset_size=4,
                                   kid_subsets=2, is_splits=2, pr_k=2, diversity_samples=2)
    examples = EvalExamples(ImageFolderSource(unique), protocol)
    assert dataset_caption_groups(examples, count=3, per_group=10) is None
    real = ImageSource("real", {}, lambda _c, inputs: pixels.to_float(inputs["image"]),
                       lambda start, size: {"image": examples.images(start, size)},
                       lambda start, size: (examples.captions(start, size), np.zeros((size, 0), np.int32)))
    result = evaluate(real, protocol, network=_tiny_network(), cache_dir=tmp_path, progress=False, reference=real)
    assert "diversity_spread" not in result.metrics and any("no 2 images" in n for n in result.notes)
    assert "fidelity_iou" not in result.metrics  # a folder draws no ideal objects


def test_the_protocol_hash_follows_the_new_fields():
    identity = {"name": "shapes"}
    base = EvalProtocol()
    hashes = {ResolvedProtocol(dataclasses.replace(base, **change), identity, "r").hash
              for change in ({}, {"fidelity_samples": 500}, {"diversity_captions": 50}, {"diversity_samples": 5},
                             {"fidelity_samples": 0})}
    assert len(hashes) == 5
    # Off on a dataset without ideal objects: the field is not part of that protocol's hash.
    assert "fidelity_samples" not in ResolvedProtocol(
        EvalProtocol(dataset="mnist", features="inception:x", fit="crop", split="test"), identity, "r").to_dict()
