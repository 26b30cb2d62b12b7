"""TFDS sources on tiny prepared datasets: images, caption recipes, errors, pickling.

``tfds.testing.mock_data`` cannot serve these sources without TensorFlow: with a decoder such
as ``SkipDecoding`` it encodes its random images with ``tf.image.encode_png``, and
``coco_captions``'s builder needs ``tf.int64`` to describe its features. So the fixture writes
real prepared datasets instead (dataset_info.json, features.json and array_record shards, as
``tfds build --file_format array_record`` would), filled with TFDS's own random mock examples,
and the sources read them exactly as they read real data.
"""

import concurrent.futures
import io
import multiprocessing
import operator
import pickle
import types
from pathlib import Path, PurePosixPath
from unittest import mock

import numpy as np
import pytest
from PIL import Image

from jaxgan.data.source import DataError, ExampleSource
from jaxgan.data.tfds_source import FALLBACK, TFDS_DATASETS, TfdsSource, clean_class_name, label_caption

N_TRAIN, N_TEST = 6, 2
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _png(array: np.ndarray) -> io.BytesIO:
    buf = io.BytesIO()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(buf, format="PNG")
    return io.BytesIO(buf.getvalue())


def _ordered(boxes) -> np.ndarray:
    """Random (ymin, xmin, ymax, xmax) boxes made valid (min <= max), as TFDS insists."""
    b = np.asarray(boxes, np.float32)
    return np.concatenate([np.minimum(b[..., :2], b[..., 2:]), np.maximum(b[..., :2], b[..., 2:])], axis=-1)


def _realistic_names(name: str, ex: dict, index: int) -> None:
    """File names shaped like the ones each builder writes (see its _generate_examples)."""
    if name == "caltech_birds2011":
        folder = f"{int(ex['label']) + 1:03d}.Bird_{int(ex['label'])}"
        ex["image/filename"] = f"CUB_200_2011/images/{folder}/Bird_{int(ex['label'])}_{index:04d}_{index + 7}.jpg"
    elif name == "oxford_flowers102":
        ex["file_name"] = f"image_{index + 1:05d}.jpg"
    elif name == "coco_captions":
        ex["image/filename"] = f"COCO_train2014_{index:012d}.jpg"


def _prepare(name: str, data_dir: Path, file_format: str = "array_record") -> list[dict]:
    """Writes ``name`` as a prepared array_record dataset; returns the raw train examples."""
    import tensorflow_datasets as tfds
    import tensorflow_datasets.object_detection.coco as coco_module
    from array_record.python.array_record_module import ArrayRecordWriter
    from tensorflow_datasets.core import naming
    from tensorflow_datasets.core import splits as splits_lib
    from tensorflow_datasets.testing.mocking import RandomFakeGenerator

    # COCO's builder names tf.int64 only to declare one scalar feature; numpy's is the same type.
    with mock.patch.object(coco_module, "tf", types.SimpleNamespace(int64=np.int64)):
        builder = tfds.builder("coco_captions/2014" if name == "coco_captions" else name,
                               data_dir=str(data_dir), file_format=file_format)
        info = builder.info
    features = info.features
    if name == "cifar10":
        features["label"].names = CIFAR10_NAMES  # the builder sets them from the archive likewise
    generator = RandomFakeGenerator(features, N_TRAIN + N_TEST)
    raw, split_infos = [], []
    builder.data_path.mkdir(parents=True)
    for split, indices in (("train", range(N_TRAIN)), ("test", range(N_TRAIN, N_TRAIN + N_TEST))):
        template = naming.ShardedFileTemplate(data_dir=builder.data_path, dataset_name=builder.name,
                                              split=split, filetype_suffix="array_record")
        writer = ArrayRecordWriter(str(template.sharded_filepath(shard_index=0, num_shards=1)), "group_size:1")
        for i in indices:
            ex = generator[i]
            _realistic_names(name, ex, i)
            if split == "train":
                raw.append(dict(ex))
                if "label" in features:  # the builder's own name for this example's label
                    raw[-1]["class_name"] = features["label"].names[int(ex["label"])]
            for key, feature in features.items():
                if isinstance(feature, tfds.features.Image):
                    ex[key] = _png(ex[key])
                elif isinstance(feature, tfds.features.BBoxFeature):
                    ex[key] = _ordered(ex[key])
                elif isinstance(feature, tfds.features.Sequence):
                    # The mock draws each leaf's length separately; a sequence needs one length.
                    n = min(len(v) for v in ex[key].values())
                    ex[key] = {k: _ordered(v[:n]) if k == "bbox" else v[:n] for k, v in ex[key].items()}
                    if split == "train":
                        raw[-1][key] = ex[key]
            writer.write(features.serialize_example(ex))
        writer.close()
        split_infos.append(splits_lib.SplitInfo(name=split, shard_lengths=[len(indices)], num_bytes=0,
                                                filename_template=template))
    info.set_splits(splits_lib.SplitDict(split_infos))
    info.write_to_directory(builder.data_path)
    return raw


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """(data_dir, {name: raw train examples}) with all five datasets prepared."""
    data_dir = tmp_path_factory.mktemp("tfds")
    return str(data_dir), {name: _prepare(name, data_dir) for name in TFDS_DATASETS}


@pytest.fixture(scope="module")
def sources(prepared):
    return {name: TfdsSource(name, "train", data_dir=prepared[0]) for name in TFDS_DATASETS}


def _decode(image) -> np.ndarray:
    assert isinstance(image, bytes)
    return np.asarray(Image.open(io.BytesIO(image)))


def _expected_captions(name: str, raw: dict) -> list[str]:
    """Each recipe, computed from the raw example's own label or captions."""
    if name == "coco_captions":
        return [" ".join(str(t).split()) for t in raw["captions"]["text"] if str(t).strip()]
    if name == "caltech_birds2011":  # its ClassLabel names are numbers; label_name has the class
        return [label_caption(name, raw["label_name"])]
    return [label_caption(name, raw["class_name"])]


@pytest.mark.parametrize("name", TFDS_DATASETS)
def test_examples_follow_each_recipe(name, prepared, sources):
    src, raws = sources[name], prepared[1][name]
    assert isinstance(src, ExampleSource) and src.name == name and len(src) == N_TRAIN
    for i, raw in enumerate(raws):
        ex = src[i]
        assert set(ex) == {"key", "image", "captions", "issues"}
        assert ex["key"].startswith(f"{name}/train[{i}]")
        if name == "mnist":
            assert ex["image"].shape == (28, 28, 1) and ex["image"].dtype == np.uint8
            np.testing.assert_array_equal(ex["image"], raw["image"])
        else:
            # Handed over encoded; PNG is lossless, so the bytes decode to the mock's pixels.
            np.testing.assert_array_equal(_decode(ex["image"]), raw["image"])
            assert _decode(ex["image"]).shape[-1] == 3
        assert ex["captions"] == _expected_captions(name, raw) and all(ex["captions"])
        assert ex["issues"] == ([FALLBACK] if name in ("caltech_birds2011", "oxford_flowers102") else [])
        assert src.captions(i) == ex["captions"]


def test_keys_name_the_image_file(prepared, sources):
    raw = prepared[1]["caltech_birds2011"][2]
    assert sources["caltech_birds2011"][2]["key"] == f"caltech_birds2011/train[2] {raw['image/filename']}"
    assert sources["oxford_flowers102"][0]["key"] == "oxford_flowers102/train[0] image_00001.jpg"
    assert sources["mnist"][1]["key"] == "mnist/train[1]"


def test_label_captions_read_clean_class_names():
    assert clean_class_name("001.Black_footed_Albatross") == "black footed albatross"
    assert label_caption("caltech_birds2011", "001.Black_footed_Albatross") == (
        "a photo of a black footed albatross, a type of bird")
    assert label_caption("oxford_flowers102", "pink primrose") == "a photo of a pink primrose, a type of flower"
    assert label_caption("mnist", "7") == "a handwritten digit seven"
    assert label_caption("cifar10", "cat") == "a photo of a cat"
    assert label_caption("cifar10", "airplane") == "a photo of an airplane"


def test_captions_never_decode_images(sources):
    import tensorflow_datasets as tfds

    def refuse(*args, **kwargs):
        raise AssertionError("captions() decoded an image")

    with mock.patch.object(tfds.features.Image, "decode_example_np", refuse), \
            mock.patch("PIL.Image.open", refuse):
        for src in sources.values():
            assert all(src.captions(i) for i in range(len(src)))


def _reed_dir(root: Path, name: str, raws: list[dict]) -> Path:
    """Reed-layout captions for examples 0-2 (1 in cp1252); the rest have none."""
    for i, raw in enumerate(raws[:3]):
        if name == "caltech_birds2011":
            path = PurePosixPath(raw["image/filename"])
            folder, stem = path.parent.name, path.stem
        else:
            folder, stem = f"class_{int(raw['label']) + 1:05d}", PurePosixPath(raw["file_name"]).stem
        lines = [f"caption {k} of example {i}, caf\u00e9" for k in range(10)]
        file = root / "text_c10" / folder / f"{stem}.txt"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes("\n".join(lines).encode("cp1252" if i == 1 else "utf-8"))
    return root


@pytest.mark.parametrize("name", ["caltech_birds2011", "oxford_flowers102"])
def test_reed_captions_with_label_fallback(name, prepared, tmp_path):
    data_dir, raws = prepared[0], prepared[1][name]
    src = TfdsSource(name, data_dir=data_dir, captions_dir=str(_reed_dir(tmp_path, name, raws)))
    for i in range(N_TRAIN):
        ex = src[i]
        if i < 3:
            assert ex["captions"] == [f"caption {k} of example {i}, caf\u00e9" for k in range(10)]
            assert ex["issues"] == (["caption_not_utf8"] if i == 1 else [])
        else:
            assert ex["captions"] == _expected_captions(name, raws[i]) and ex["issues"] == [FALLBACK]
        assert src.captions(i) == ex["captions"]
    # The release's text_c10 folder itself works as captions_dir too.
    assert TfdsSource(name, data_dir=data_dir, captions_dir=str(tmp_path / "text_c10"))[0]["issues"] == []


def _one_line_error(match: str, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        TfdsSource(*args, **kwargs)
    assert "\n" not in str(info.value)
    return str(info.value)


def test_errors_are_one_line(prepared, tmp_path):
    data_dir = prepared[0]
    assert "mnist, cifar10" in _one_line_error("unsupported TFDS dataset 'imagenet2012'", "imagenet2012")
    _one_line_error(r"not prepared in .*tfds build mnist --data_dir", "mnist", data_dir=str(tmp_path))
    _one_line_error(r"no split 'validation'; splits: test, train", "cifar10", "validation", data_dir=data_dir)
    _one_line_error(r"no split 'dev'; splits: test, train", "mnist", "train[:50%]+dev", data_dir=data_dir)
    _one_line_error("is not a directory", "caltech_birds2011", data_dir=data_dir, captions_dir=str(tmp_path / "no"))
    (tmp_path / "empty" / "text_c10").mkdir(parents=True)
    _one_line_error("no .txt caption files", "oxford_flowers102", data_dir=data_dir,
                    captions_dir=str(tmp_path / "empty"))
    _one_line_error("applies to caltech_birds2011 and oxford_flowers102 only", "mnist", data_dir=data_dir,
                    captions_dir=str(tmp_path))


def test_tfrecord_datasets_are_refused(tmp_path):
    _prepare("mnist", tmp_path, file_format="tfrecord")
    _one_line_error("not in array_record format: rebuild with `--file_format array_record`", "mnist",
                    data_dir=str(tmp_path))


def test_split_slices_and_test_split(prepared):
    assert len(TfdsSource("mnist", "test", data_dir=prepared[0])) == N_TEST
    assert len(TfdsSource("mnist", "train[:50%]+test", data_dir=prepared[0])) == N_TRAIN // 2 + N_TEST
    assert len(TfdsSource("cifar10", "all", data_dir=prepared[0])) == N_TRAIN + N_TEST


def _same(a: dict, b: dict) -> bool:
    return (a["key"], a["captions"], a["issues"]) == (b["key"], b["captions"], b["issues"]) and np.array_equal(
        np.asarray(a["image"] if not isinstance(a["image"], bytes) else list(a["image"])),
        np.asarray(b["image"] if not isinstance(b["image"], bytes) else list(b["image"])))


@pytest.mark.parametrize("name", ["coco_captions", "mnist", "oxford_flowers102"])
def test_deterministic_and_picklable(name, prepared, sources, tmp_path):
    kwargs = {"captions_dir": str(_reed_dir(tmp_path, name, prepared[1][name]))} if name == "oxford_flowers102" else {}
    a, b = (TfdsSource(name, data_dir=prepared[0], **kwargs) for _ in range(2))
    a[0]  # opened before pickling: the open data source must not travel
    blob = pickle.dumps(a)
    assert len(blob) < 4000
    c = pickle.loads(blob)
    assert len(c) == len(a)
    for i in range(len(a)):
        assert _same(a[i], b[i]) and _same(a[i], c[i])


def test_reads_in_a_fresh_worker_process(prepared, tmp_path):
    """What a Grain worker does: unpickle the source in a new process and read from it."""
    name = "caltech_birds2011"
    src = TfdsSource(name, data_dir=prepared[0], captions_dir=str(_reed_dir(tmp_path, name, prepared[1][name])))
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        got = list(pool.map(operator.getitem, [src] * 2, [1, 4]))
    assert _same(got[0], src[1]) and _same(got[1], src[4])
    assert got[0]["issues"] == ["caption_not_utf8"] and got[1]["issues"] == [FALLBACK]


@pytest.mark.parametrize("name", ["caltech_birds2011", "oxford_flowers102", "mnist", "cifar10"])
def test_registered_builders_serve_tfds_mock_data(name, tmp_path):
    """Without prepared files the registered builder's data source is used: what
    ``tfds.testing.mock_data`` serves (decoded images; COCO's builder needs TensorFlow)."""
    import tensorflow_datasets as tfds

    with tfds.testing.mock_data(num_examples=6):
        source = TfdsSource(name, data_dir=str(tmp_path / "empty"))
        assert len(source) == 6
        item = source[3]
        record = tfds.builder(name).as_data_source("train")[3]
    image = np.asarray(item["image"])
    assert image.ndim == 3 and image.shape[-1] == (1 if name == "mnist" else 3)
    np.testing.assert_array_equal(image, record["image"])
    names = tfds.builder(name).info.features["label"].names
    class_name = str(record["label_name"]) if name == "caltech_birds2011" else names[int(record["label"])]
    assert item["captions"] == [label_caption(name, class_name)]
    assert (FALLBACK in item["issues"]) == (name in ("caltech_birds2011", "oxford_flowers102"))
