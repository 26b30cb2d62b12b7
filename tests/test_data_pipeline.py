"""The dataset input pipeline: exact resume, per-process shards, bad examples counted, the
frozen-embedding cache."""

import numpy as np
import pytest

from jaxgan.data import embeddings
from jaxgan.data.pipeline import Pipeline
from jaxgan.data.source import DataError, ExampleSource, example
from jaxgan.presets import get_config

BATCH = 8


class ArraySource(ExampleSource):
    """``n`` 12x12 examples of known colours; ``bad`` ones are empty images, ``uncaptioned`` have no caption."""

    def __init__(self, n=37, bad=(), uncaptioned=()):
        self.name, self.n, self.bad, self.uncaptioned = "arrays", n, set(bad), set(uncaptioned)

    def __len__(self):
        return self.n

    def captions(self, i):
        return [] if i in self.uncaptioned else [f"example {i}", f"example {i} again"]

    def __getitem__(self, i):
        image = np.zeros((0, 0, 3), np.uint8) if i in self.bad else np.full((12, 12, 3), i, np.uint8)
        return example(f"arrays[{i}]", image, self.captions(i))


class FakeTable:
    """Embeddings that encode the caption's example number, so batches can be traced back."""

    truncated = 0

    def __call__(self, captions):
        return np.array([[float(c.split()[1])] for c in captions], np.float32)

    def text(self, captions):
        return {"sentence": self(captions)}


def _pipeline(source, workers=0, process=(0, 1), seed=0):
    config = get_config("tiny", [f"train.batch_size={BATCH}", "model.resolution=32", f"data.workers={workers}",
                                 f"data.seed={seed}"])
    return Pipeline(config, source, FakeTable(), (0, BATCH // process[1]), *process)


def _ids(batch):
    return batch["image"][:, 0, 0, 0].tolist()


def test_batches_hold_decoded_images_with_their_own_captions_and_other_captions_as_negatives():
    batches = list(_pipeline(ArraySource()).iterate(0, 5))
    for batch in batches:
        assert batch["image"].shape == (BATCH, 32, 32, 3) and batch["image"].dtype == np.uint8
        # The image of example i is filled with i; its caption embeds i; the negative is another's.
        assert _ids(batch) == batch["sentence"][:, 0].astype(int).tolist()
        assert np.all(batch["wrong_sentence"][:, 0] != batch["sentence"][:, 0])
    seen = [i for b in batches for i in _ids(b)]
    # 40 draws cover the 37 examples once each (one epoch) before any repeats.
    assert sorted(seen[:37]) == list(range(37))


def test_resume_from_a_saved_position_replays_exactly_the_uninterrupted_batches():
    source = ArraySource(bad=(3, 11), uncaptioned=(5,))
    straight = list(_pipeline(source).iterate(0, 9))
    first = _pipeline(source)
    head = list(first.iterate(0, 4))
    position = first.position(4)
    assert position["consumed"][0] >= 4 * BATCH  # skipped examples are consumed too
    second = _pipeline(source)
    assert second.resume(position) == 4
    tail = list(second.iterate(4, 9))
    for a, b in zip(straight, head + tail):
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)
    # The counts carry over: the resumed pipeline reports what the straight one does.
    straight_pipeline = _pipeline(source)
    list(straight_pipeline.iterate(0, 9))
    assert second.stats_at(9) == straight_pipeline.stats_at(9)


def test_worker_processes_give_the_same_batches_as_the_main_process():
    source = ArraySource(bad=(2,))
    inline = list(_pipeline(source, workers=0).iterate(0, 3))
    pooled = list(_pipeline(source, workers=2).iterate(0, 3))
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(inline, pooled))


def test_processes_read_disjoint_shards_that_together_are_the_dataset():
    source = ArraySource(n=40)
    shards = []
    for index in range(2):
        pipeline = _pipeline(source, process=(index, 2))
        shards.append({i for b in pipeline.iterate(0, 5) for i in _ids(b)})  # 5 x 4 rows = one epoch of 20
    assert shards[0].isdisjoint(shards[1])
    assert shards[0] | shards[1] == set(range(40))


def test_bad_examples_are_skipped_counted_and_named():
    source = ArraySource(bad=range(0, 37, 4), uncaptioned=(1, 2))
    pipeline = _pipeline(source)
    batches = list(pipeline.iterate(0, 5))
    assert all(not {i % 4 == 0 or i in (1, 2) for i in _ids(b)} - {False} for b in batches)
    stats = pipeline.stats_at(5)
    consumed = pipeline.position(5)["consumed"][0]
    assert stats["data/skipped"] == consumed - 5 * BATCH > 0
    assert stats["data/skipped_empty"] + stats["data/skipped_no_caption"] == stats["data/skipped"]


def test_a_dataset_where_everything_fails_stops_with_a_message_naming_files():
    pipeline = _pipeline(ArraySource(n=10, bad=range(10)))
    with pytest.raises(DataError, match=r"last 10 examples read were all unusable \(empty \(10\): arrays\[\d+\]"):
        list(pipeline.iterate(0, 1))


def test_resume_refuses_another_seed():
    first = _pipeline(ArraySource())
    list(first.iterate(0, 1))
    with pytest.raises(DataError, match="would not replay the same data"):
        _pipeline(ArraySource(), seed=1).resume(first.position(1))


# --- the frozen-embedding cache --------------------------------------------------------------


@pytest.fixture(scope="module")
def encoder():
    from jaxgan.text import load_text_encoder

    return load_text_encoder()


CAPTIONS = ["a small red circle in the top left", "a large blue square at the bottom",
            "a small red circle in the top left", "the right has a small white circle"]


def test_cached_embeddings_equal_the_encoder_and_are_reused(encoder, tmp_path, monkeypatch):
    table = embeddings.embedding_table(encoder, CAPTIONS, tmp_path, with_words=True)
    assert len(table) == 3
    direct = encoder(CAPTIONS)
    got = table.text(CAPTIONS)
    np.testing.assert_allclose(got["sentence"], np.asarray(direct.sentence), atol=1e-5)
    # Words are kept at the longest caption's power-of-two width (16 for these 10 tokens, not
    # the encoder's 32 tokens): at real tokens the encoder's values, the padding (never attended to) zero.
    width = got["words"].shape[1]
    assert width == 16 and np.asarray(direct.mask)[:, width:].sum() == 0
    real = np.asarray(direct.mask)[:, :width]
    np.testing.assert_array_equal(got["word_mask"], real)
    np.testing.assert_allclose(got["words"][real], np.asarray(direct.words)[:, :width][real], atol=1e-5)
    assert not got["words"][~real].any()

    def fail(*args, **kwargs):
        raise AssertionError("a cached caption set was encoded again")

    monkeypatch.setattr(embeddings, "encode_all", fail)
    again = embeddings.embedding_table(encoder, reversed(CAPTIONS), tmp_path, with_words=True)
    assert again.directory == table.directory
    np.testing.assert_array_equal(again(CAPTIONS), table(CAPTIONS))


def test_the_cache_key_is_the_encoder_and_the_caption_set(encoder, tmp_path):
    a = embeddings.embedding_table(encoder, CAPTIONS, tmp_path)
    b = embeddings.embedding_table(encoder, CAPTIONS + ["a large yellow triangle in the center"], tmp_path)
    assert a.directory != b.directory and a.directory.parent == b.directory.parent
    with pytest.raises(KeyError, match="not in the embedding cache"):
        a(["a caption nobody embedded"])
    # No temporary entries are left behind.
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]


def test_captions_longer_than_the_context_are_counted(encoder, tmp_path):
    long = " ".join(["a small red circle in the top left"] * 20)
    table = embeddings.embedding_table(encoder, [long, CAPTIONS[0]], tmp_path)
    assert table.truncated == 1


def test_captions_outside_the_encoders_vocabulary_are_measured(encoder):
    # The shipped encoder knows the shapes vocabulary only.
    assert embeddings.unknown_token_share(encoder, CAPTIONS) == 0.0
    assert embeddings.unknown_token_share(encoder, CAPTIONS + ["a bird on a branch"]) == 0.2
