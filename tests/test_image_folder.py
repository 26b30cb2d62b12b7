"""Image decoding (jaxgan.data.images) and the image-folder source (jaxgan.data.folder).

Bad files are built here with PIL or raw bytes; expected pixel values are worked out by hand
in the comments, chosen so that the usual mistakes (clipping, no alpha, wrong crop) fail.
"""

import io
import logging
import pickle

import numpy as np
import pytest
from PIL import Image

from jaxgan.data.folder import ImageFolderSource
from jaxgan.data.images import ImageError, load_image
from jaxgan.data.source import DataError, ExampleSource

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def halves(w: int, h: int, left=RED, right=BLUE) -> Image.Image:
    """RGB w x h: the left half one colour, the right half another."""
    array = np.empty((h, w, 3), np.uint8)
    array[:, : w // 2], array[:, w // 2:] = left, right
    return Image.fromarray(array)


def noise_image(w: int = 200, h: int = 150) -> Image.Image:
    # Noise compresses badly, so cutting the file in half cuts into the pixel data.
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


def near(pixel, expected, tol: int) -> bool:
    return bool(np.all(np.abs(np.asarray(pixel, int) - np.asarray(expected, int)) <= tol))


# --- images: refused ---------------------------------------------------------------------


@pytest.mark.parametrize("data", [
    b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\n%%EOF\n",
    b"\xc5\xd0\xd3\xc6" + bytes(28) + b"%!PS-Adobe-3.0 EPSF-3.0\n",  # DOS EPS binary header
], ids=["eps", "dos-eps"])
def test_a_postscript_file_renamed_jpg_never_reaches_a_postscript_parser(tmp_path, data):
    # PIL knows EPS and would hand it to Ghostscript; only raster formats are opened.
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageError) as e:
        load_image(path, 32)
    assert e.value.reason == "corrupt"
    assert "not a JPEG, PNG, WEBP, GIF, BMP, TIFF image" in str(e.value) and "\n" not in str(e.value)


def test_corrupt_jpeg_is_refused_as_corrupt():
    data = b"\xff\xd8\xff\xe0" + np.random.default_rng(1).bytes(4000)
    with pytest.raises(ImageError) as e:
        load_image(data, 32)
    assert e.value.reason == "corrupt" and "\n" not in str(e.value)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_file_is_refused_as_truncated(fmt):
    data = encode(noise_image(), fmt)
    load_image(data, 32)  # whole: fine
    with pytest.raises(ImageError) as e:
        load_image(data[: len(data) // 2], 32)
    assert e.value.reason == "truncated"


def test_empty_missing_and_too_large(tmp_path, monkeypatch):
    with pytest.raises(ImageError) as e:
        load_image(b"", 32)
    assert e.value.reason == "empty"
    with pytest.raises(ImageError) as e:
        load_image(tmp_path / "nope.jpg", 32)
    assert e.value.reason == "unreadable"
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 9999)  # 100 x 100 is one over
    # PIL warns above its limit (and refuses only at twice it); load_image refuses at it.
    with pytest.raises(ImageError) as e, pytest.warns(Image.DecompressionBombWarning):
        load_image(data, 32)
    assert e.value.reason == "too_large"


# --- images: converted -------------------------------------------------------------------


def test_cmyk_jpeg_becomes_rgb():
    # R, G, B = 255 (1 - C/255) (1 - K/255): (0, 128, 255, 64) -> (191, 95.1, 0); a formula
    # that subtracts K without scaling gives G = 63.
    data = encode(Image.new("CMYK", (32, 32), (0, 128, 255, 64)), "JPEG", quality=95)
    pixels, issues = load_image(data, 32)
    assert pixels.shape == (32, 32, 3) and pixels.dtype == np.uint8
    assert near(pixels[16, 16], (191, 95, 0), 6), pixels[16, 16]
    assert issues == ["cmyk"]


def test_16_bit_png_is_scaled_by_its_depth_not_clipped():
    # 32768 * 255 / 65535 = 127.5 -> 128 and 16384 * 255 / 65535 = 63.75 -> 64 (clipping: 255).
    array = np.full((16, 16), 32768, np.uint16)
    array[:, 8:] = 16384
    data = encode(Image.fromarray(array), "PNG")
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    pixels, issues = load_image(data, 16)
    assert tuple(pixels[0, 0]) == (128, 128, 128) and tuple(pixels[0, 15]) == (64, 64, 64)
    assert issues == ["high_bit_depth", "grayscale"]


def test_32_bit_and_float_tiff():
    # Mode I with largest value 1000 is taken as 16-bit: 1000 * 255 / 65535 = 3.89 -> 4.
    pixels, issues = load_image(encode(Image.fromarray(np.full((8, 8), 1000, np.int32)), "TIFF"), 8)
    assert tuple(pixels[0, 0]) == (4, 4, 4) and "high_bit_depth" in issues
    # Mode F in [0, 1]: 0.25 * 255 = 63.75 -> 64.
    pixels, _ = load_image(encode(Image.fromarray(np.full((8, 8), 0.25, np.float32)), "TIFF"), 8)
    assert tuple(pixels[0, 0]) == (64, 64, 64)


def test_palette_png_with_transparency_goes_over_white():
    image = Image.new("P", (16, 16), 0)
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # 0: red (made transparent), 1: blue
    image.paste(1, (8, 0, 16, 16))
    pixels, issues = load_image(encode(image, "PNG", transparency=0), 16)
    assert tuple(pixels[0, 0]) == WHITE and tuple(pixels[0, 15]) == BLUE
    assert issues == ["palette", "alpha"]


def test_rgba_png_composited_over_white():
    # Over white: c * a / 255 + 255 (1 - a / 255). (0, 0, 0, 128) -> 127; (200, 100, 40, 200):
    # 156.9 + 55 = 211.9 -> 212 (truncating gives 211), 78.4 + 55 -> 133, 31.4 + 55 -> 86.
    # Dropping alpha gives black and (200, 100, 40).
    array = np.zeros((16, 16, 4), np.uint8)
    array[:, :8] = (0, 0, 0, 128)
    array[:, 8:] = (200, 100, 40, 200)
    pixels, issues = load_image(encode(Image.fromarray(array), "PNG"), 16)
    assert tuple(pixels[0, 0]) == (127, 127, 127) and tuple(pixels[0, 15]) == (212, 133, 86)
    assert issues == ["alpha"]
    # The same from an array; an opaque alpha channel is no issue.
    assert tuple(load_image(array, 16)[0][0, 15]) == (212, 133, 86)
    assert load_image(np.full((4, 4, 4), 255, np.uint8), 4)[1] == []


def test_small_image_is_upscaled_with_an_issue():
    pixels, issues = load_image(encode(Image.new("RGB", (4, 4), (10, 200, 30)), "PNG"), 32)
    assert pixels.shape == (32, 32, 3) and tuple(pixels[17, 5]) == (10, 200, 30)
    assert issues == ["upscaled"]
    assert load_image(encode(Image.new("RGB", (40, 40)), "PNG"), 32)[1] == []


def test_crop_and_pad_geometry():
    data = encode(halves(64, 32), "PNG")  # 64 wide: red | blue
    crop, issues = load_image(data, 32, "crop")
    # The centred 32 x 32 square is x 16..47: red for its left 16 columns, blue for the rest
    # (a crop from the left edge would be all red).
    assert np.all(crop[:, :16] == RED) and np.all(crop[:, 16:] == BLUE) and issues == []
    pad, issues = load_image(data, 32, "pad")
    # Resized to 32 x 16, centred: white rows 0..7 and 24..31.
    assert np.all(pad[:8] == 255) and np.all(pad[24:] == 255)
    assert near(pad[8:24, :14], RED, 2) and near(pad[8:24, 18:], BLUE, 2) and issues == []
    tall, _ = load_image(np.asarray(halves(16, 32)), 32, "pad")  # 16 wide: white columns each side
    assert np.all(tall[:, :8] == 255) and np.all(tall[:, 24:] == 255) and not np.all(tall[:, 8:24] == 255)


def test_big_jpeg_is_drafted_and_still_centred():
    pixels, issues = load_image(encode(halves(1600, 800), "JPEG", quality=95), 64)
    assert near(pixels[:, :28], RED, 12) and near(pixels[:, 36:], BLUE, 12) and issues == []


def test_exif_orientation_is_applied():
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64 x 32 (red | blue); shown turned a quarter clockwise: red on top
    data = encode(halves(64, 32), "JPEG", quality=95, exif=exif.tobytes())
    pixels, issues = load_image(data, 32)
    assert near(pixels[4, 4], RED, 12) and near(pixels[28, 4], BLUE, 12)  # unrotated: both red
    assert issues == ["exif_rotated"]


def test_webp():
    pixels, issues = load_image(encode(halves(32, 32), "WEBP", lossless=True), 32)
    assert tuple(pixels[0, 0]) == RED and tuple(pixels[0, 31]) == BLUE and issues == []


def test_arrays():
    assert tuple(load_image(np.full((8, 8), 32768, np.uint16), 8)[0][0, 0]) == (128, 128, 128)
    # [0, 1] floats: 0.5 * 255 = 127.5 -> 128. Outside [0, 1]: rescaled from min..max.
    assert tuple(load_image(np.full((8, 8, 3), 0.5, np.float32), 8)[0][0, 0]) == (128, 128, 128)
    spread = np.zeros((8, 8, 1), np.float32)
    spread[:, :4], spread[:, 4:] = -1.0, 3.0
    pixels, issues = load_image(spread, 8)
    assert pixels[0, 0, 0] == 0 and pixels[0, 7, 0] == 255 and issues == ["high_bit_depth", "grayscale"]
    rgb = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    out, issues = load_image(rgb, 4)
    assert np.array_equal(out, rgb) and issues == [] and out.flags.writeable
    for bad in (np.zeros((4, 4, 2), np.uint8), np.zeros((4,), np.uint8)):
        with pytest.raises(ImageError) as e:
            load_image(bad, 4)
        assert e.value.reason == "unsupported"
    with pytest.raises(ImageError) as e:
        load_image(np.full((4, 4), np.nan), 4)
    assert e.value.reason == "corrupt"


# --- the folder source -------------------------------------------------------------------


def put_image(path, color=(10, 20, 30), fmt="PNG"):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path, fmt)


@pytest.fixture
def sidecar_folder(tmp_path):
    root = tmp_path / "birds"
    put_image(root / "a" / "b" / "x.JPG", fmt="JPEG")
    put_image(root / "a" / "img.webp", fmt="WEBP")
    put_image(root / "c.png")
    put_image(root / "d.jpeg", fmt="JPEG")
    put_image(root / ".hidden" / "y.jpg", fmt="JPEG")
    put_image(root / ".z.png")
    (root / "notes.gif").write_bytes(b"GIF89a")
    (root / "a" / "b" / "x.txt").write_text("a red bird\n\n  a   small\tbird  \n")
    (root / "a" / "img.txt").write_text("  \n\n")
    (root / "d.txt").write_bytes("a café bird".encode("cp1252"))
    return root


def test_folder_scan_and_sidecar_captions(sidecar_folder):
    source = ImageFolderSource(sidecar_folder)
    assert isinstance(source, ExampleSource) and source.name == "birds"
    assert [source.path(i) for i in range(len(source))] == ["a/b/x.JPG", "a/img.webp", "c.png", "d.jpeg"]
    assert source.caption_source == "sidecar .txt"
    assert source.captions(0) == ["a red bird", "a small bird"]
    assert source[1]["captions"] == [] and source[1]["issues"] == ["caption_empty"]
    assert source[2]["captions"] == [] and source[2]["issues"] == ["caption_file_missing"]
    assert source[3]["captions"] == ["a café bird"] and source[3]["issues"] == ["caption_not_utf8"]
    ex = source[0]
    assert ex["key"] == "a/b/x.JPG" and ex["image"] == (sidecar_folder / "a/b/x.JPG").read_bytes()
    pixels, issues = load_image(source[2]["image"], 8)
    assert tuple(pixels[0, 0]) == (10, 20, 30) and issues == []
    assert source[-1]["key"] == "d.jpeg" and source[np.int64(2)]["key"] == "c.png"
    with pytest.raises(IndexError):
        source[4]


def test_folder_captions_never_open_images_and_pickle_small(sidecar_folder):
    source = ImageFolderSource(sidecar_folder)
    (sidecar_folder / "a" / "b" / "x.JPG").unlink()
    assert source.captions(0) == ["a red bird", "a small bird"]
    gone = source[0]  # deleted since the scan: counted downstream, not raised here
    assert gone["image"] == b"" and gone["issues"] == ["image_unreadable"]
    data = pickle.dumps(source)
    assert len(data) < 1000
    assert pickle.loads(data).captions(3) == ["a café bird"]


def test_jsonl_index(tmp_path, caplog):
    root = tmp_path / "ds"
    for name in ("p/one.png", "two.png", "three.png", "four.png"):
        put_image(root / name)
    (root / "p" / "one.txt").write_text("ignored: the index wins")
    lines = [
        b'{"file": "p/one.png", "caption": "first"}',
        b'{"file": "./p/one.png", "captions": ["second", "  third\\n line "]}',
        b"",
        b'{"file": "two.png", "caption": "caf\xe9"}',  # cp1252
        b"{not json",
        b'{"caption": "no file"}',
        b'{"file": "missing.png", "caption": "x"}',
        b'{"file": "three.png", "captions": []}',
    ]
    (root / "captions.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    with caplog.at_level(logging.WARNING, logger="jaxgan.data.folder"):
        source = ImageFolderSource(root)
    assert source.caption_source == "captions.jsonl"
    assert [source.path(i) for i in range(4)] == ["four.png", "p/one.png", "three.png", "two.png"]
    assert source.captions(1) == ["first", "second", "third line"] and source[1]["issues"] == []
    assert source[3]["captions"] == ["café"] and source[3]["issues"] == ["caption_not_utf8"]
    assert source[2]["issues"] == ["caption_empty"] and source[0]["issues"] == ["caption_missing"]
    assert source.index_issues == {"index_malformed": 2, "index_unknown_file": 1, "caption_not_utf8": 1}
    assert "line 5" in caplog.text and "'missing.png'" in caplog.text
    assert pickle.loads(pickle.dumps(source)).captions(1) == source.captions(1)


def test_csv_index_and_precedence(tmp_path, caplog):
    root = tmp_path / "ds"
    put_image(root / "a.png")
    put_image(root / "b.png")
    (root / "captions.csv").write_bytes(
        b'file,caption,source\n'
        b'a.png,"a red, round bird",web\n'
        b'a.png,"a bird ""in"" the\nrain",web\n'
        b'b.png,a red, round bird,web,extra\n'
        b'nope.png,x,web\n'
        b'b.png,plain,web\n'
        b'b.png,"au\ncaf\xe9",web\n'  # cp1252 on the second line of a quoted row
    )
    with caplog.at_level(logging.WARNING, logger="jaxgan.data.folder"):
        source = ImageFolderSource(root)
    assert source.caption_source == "captions.csv"
    assert source.captions(0) == ["a red, round bird", 'a bird "in" the rain']
    assert source.captions(1) == ["plain", "au café"] and source[1]["issues"] == ["caption_not_utf8"]
    assert source[0]["issues"] == []
    assert source.index_issues == {"index_malformed": 1, "index_unknown_file": 1, "caption_not_utf8": 1}
    assert "line 5" in caplog.text  # the quoted newline makes the bad row line 5, not 4
    (root / "captions.jsonl").write_text('{"file": "a.png", "caption": "from jsonl"}\n')
    assert ImageFolderSource(root).captions(0) == ["from jsonl"]


def test_unreadable_datasets_raise_one_line(tmp_path):
    for root, words in [(tmp_path / "nope", "does not exist"), (tmp_path, "no images")]:
        (tmp_path / "only.txt").write_text("a caption without an image")
        with pytest.raises(DataError) as e:
            ImageFolderSource(root)
        assert words in str(e.value) and str(root) in str(e.value) and "\n" not in str(e.value)
    assert ".jpg" in str(e.value) and ".webp" in str(e.value)
    with pytest.raises(DataError, match="not a directory"):
        ImageFolderSource(tmp_path / "only.txt")
    put_image(tmp_path / "a.png")
    (tmp_path / "captions.csv").write_text("path,text\na.png,x\n")
    with pytest.raises(DataError, match="file and caption"):
        ImageFolderSource(tmp_path)
    (tmp_path / "captions.jsonl").write_text("garbage\n[1]\n")
    with pytest.raises(DataError, match="all 2 lines are malformed"):
        ImageFolderSource(tmp_path)
