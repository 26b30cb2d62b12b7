"""Decoding one training image: any common file or array to a uint8 [R, R, 3] RGB square.

``load_image`` never lets bad data through silently: what it had to convert is returned as
issue names (counted by the pipeline), and an image that cannot be used raises ``ImageError``
with a short ``reason`` (the pipeline skips and counts the example). It is a pure function of
its arguments: the pipeline's workers call it in separate processes.

Issue names (see ``ISSUES``) and ``ImageError`` reasons (see ``REASONS``) are part of the
pipeline's metrics; keep them short and stable.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from jaxgan.errors import JaxganError

ISSUES = {
    "cmyk": "a CMYK image converted to RGB (PIL's formula, no ICC profile)",
    "color_space": "a YCbCr, LAB or HSV image converted to RGB",
    "high_bit_depth": "16/32-bit integer or float pixels scaled to 8 bits by their bit depth",
    "palette": "a palette image expanded to RGB",
    "alpha": "transparent pixels composited over white (fully opaque alpha is dropped silently)",
    "grayscale": "a grayscale or 1-bit image repeated to three channels",
    "exif_rotated": "the EXIF orientation applied",
    "first_frame": "an animated image: its first frame used",
    "upscaled": "smaller than the target, so enlarged (blurrier than its neighbours)",
}

REASONS = {
    "empty": "no bytes, or zero width or height",
    "unreadable": "the file could not be read (missing, permissions)",
    "corrupt": "not a decodable image (unknown format, damaged header or data, NaN pixels)",
    "truncated": "the file ends before the image data does",
    "too_large": "more pixels than PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS)",
    "unsupported": "a pixel mode or array shape with no sensible RGB conversion",
}

FITS = ("crop", "pad")

# The only formats PIL may parse, whatever a file's extension says: the raster formats of image
# folders and TFDS datasets. Without the list, a PostScript file renamed .jpg would reach PIL's
# EPS plugin, which runs Ghostscript on it.
RASTER_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# Resampling: bicubic is antialiased in PIL (its support widens when reducing). reducing_gap
# first box-reduces by an integer factor while staying >= 3x the target, which PIL documents
# as indistinguishable from plain resampling and is several times faster on large sources.
_RESAMPLE = Image.Resampling.BICUBIC
_REDUCING_GAP = 3.0
# JPEG only: decode at 1/2, 1/4 or 1/8 scale in the DCT while both sides stay >= this many
# times the target (PIL's thumbnail uses the same 2). A 2000 x 1500 photo to 256 px decodes
# at 1000 x 750, four times fewer pixels; the DCT's downscale is itself antialiased.
_DRAFT_GAP = 2.0
# Colour that transparent pixels and "pad" borders become (see load_image).
_BACKGROUND = 255
# EXIF orientation tag value -> the transpose that undoes it (1 is upright).
_ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
                 4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
                 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
                 8: Image.Transpose.ROTATE_90}


class ImageError(JaxganError, ValueError):
    """An image that cannot be used; ``reason`` is one of ``REASONS`` (a metrics key)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


def load_image(data: bytes | np.ndarray | str | Path, resolution: int,
               fit: str = "crop") -> tuple[np.ndarray, list[str]]:
    """An image as uint8 [resolution, resolution, 3] RGB, and the issues met on the way.

    Args:
      data: encoded file bytes, a file path, or a pixel array [H, W], [H, W, 1], [H, W, 3] or
        [H, W, 4] of dtype uint8, uint16, another integer type or float (taken as [0, 1]; a
        float array outside that range is rescaled from its own min..max).
      resolution: side of the square output.
      fit: "crop" takes the centred square of side min(H, W); "pad" keeps the whole image and
        fills the rest of the square with white. White because transparent pixels are
        composited over white too, so one colour means "no content" across the dataset, and
        object photos (birds, flowers, products) are mostly shot on light backgrounds.

    Returns:
      (pixels, issues): issue names are keys of ``ISSUES``, in the order met.

    Raises:
      ImageError: the image cannot be used; ``.reason`` is a key of ``REASONS``.
    """
    if fit not in FITS:
        raise ValueError(f"fit must be one of {FITS}, got {fit!r}")
    if int(resolution) != resolution or resolution < 1:
        raise ValueError(f"resolution must be a positive integer, got {resolution!r}")
    issues: list[str] = []
    if isinstance(data, np.ndarray):
        image = Image.fromarray(_finish(_array_to_uint8(data, issues), issues))
    else:
        image = _decode(_read(data), resolution, issues)
    # A copy, writable (PIL's array view is not), that owns no PIL memory.
    return np.array(_fit(image, resolution, fit, issues), dtype=np.uint8), issues


def _read(data: bytes | str | Path) -> bytes:
    if isinstance(data, (str, Path)):
        try:
            data = Path(data).read_bytes()
        except OSError as e:
            raise ImageError("unreadable", f"cannot read {data}: {e.strerror or e}") from None
    data = bytes(data)
    if not data:
        raise ImageError("empty", "no image bytes")
    return data


def _decode(data: bytes, resolution: int, issues: list[str]) -> Image.Image:
    """Decoded, oriented RGB. PIL raises a grab bag of exception types on hostile input, so
    everything raised while PIL parses is mapped to a reason here and nowhere else."""
    try:
        image = Image.open(io.BytesIO(data), formats=RASTER_FORMATS)
        _check_size(image.size)
        if getattr(image, "is_animated", False):
            issues.append("first_frame")
        side = int(resolution * _DRAFT_GAP)
        image.draft(None, (side, side))
        image.load()
        orientation = image.getexif().get(0x0112, 1)
    except ImageError:
        raise
    except Image.DecompressionBombError as e:
        raise ImageError("too_large", str(e).split(".")[0]) from None
    except UnidentifiedImageError:
        raise ImageError("corrupt", f"not a {', '.join(RASTER_FORMATS)} image (another format, or a damaged "
                         "header)") from None
    except Exception as e:  # see the docstring
        # ImageFile.load's own message for data that ends early; anything else is damage.
        reason = "truncated" if "image file is truncated" in str(e) else "corrupt"
        raise ImageError(reason, f"{reason} image: {type(e).__name__}: {' '.join(str(e).split())}") from None
    image = _to_rgb(image, issues)
    if orientation in _ORIENTATIONS:
        issues.append("exif_rotated")
        image = image.transpose(_ORIENTATIONS[orientation])
    return image


def _check_size(size: tuple[int, int]) -> None:
    if size[0] < 1 or size[1] < 1:
        raise ImageError("empty", f"image of size {size[0]}x{size[1]}")
    # PIL itself only refuses at twice its limit (and warns above it).
    if Image.MAX_IMAGE_PIXELS and size[0] * size[1] > Image.MAX_IMAGE_PIXELS:
        raise ImageError("too_large", f"image of {size[0]}x{size[1]} pixels exceeds "
                                      f"PIL's limit of {Image.MAX_IMAGE_PIXELS}")


def _to_rgb(image: Image.Image, issues: list[str]) -> Image.Image:
    """A PIL image of any mode as RGB, with the issues its conversion raised."""
    mode, transparent = image.mode, "transparency" in image.info
    if mode == "RGB" and not transparent:
        return image
    if mode in ("P", "PA"):
        issues.append("palette")
        image = image.convert("RGBA" if transparent or mode == "PA" else "RGB")
    elif mode == "CMYK":
        issues.append("cmyk")
        image = image.convert("RGB")
    elif mode in ("YCbCr", "LAB", "HSV"):
        issues.append("color_space")
        image = image.convert("RGB")
    elif mode.startswith("I") or mode == "F":
        return Image.fromarray(_finish(_array_to_uint8(_mode_array(image), issues), issues))
    elif mode in ("1", "L"):
        image = image.convert("LA" if transparent else "L")
    elif mode in ("RGB", "RGBA", "RGBa"):
        image = image.convert("RGBA")  # RGB here has a transparent colour key
    elif mode in ("LA", "La", "RGBX"):
        image = image.convert("RGB" if mode == "RGBX" else "LA")
    else:
        raise ImageError("unsupported", f"unsupported image mode {mode}")
    return Image.fromarray(_finish(np.asarray(image), issues))


def _mode_array(image: Image.Image) -> np.ndarray:
    """Pixels of an I;16*, I or F image; I;16 says its depth, plain I does not."""
    array = np.asarray(image)
    return array.astype(np.uint16) if image.mode.startswith("I;16") else array


def _array_to_uint8(array: np.ndarray, issues: list[str]) -> np.ndarray:
    """uint8 [H, W, C] with C in 1..4 from any array load_image accepts."""
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ImageError("unsupported", f"pixel array of shape {array.shape}; want [H, W] or [H, W, 1|3|4]")
    _check_size((array.shape[1], array.shape[0]))
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool:
        return array.astype(np.uint8) * np.uint8(255)
    issues.append("high_bit_depth")
    if np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise ImageError("corrupt", "pixel array with NaN or infinite values")
        low, high = (0.0, 1.0) if array.min() >= 0 and array.max() <= 1 else (array.min(), array.max())
    elif np.issubdtype(array.dtype, np.integer):
        low, high = _integer_range(array)
    else:
        raise ImageError("unsupported", f"pixel array of dtype {array.dtype}")
    scaled = (array.astype(np.float64) - low) * (255.0 / max(high - low, 1e-12))
    return np.rint(np.clip(scaled, 0, 255)).astype(np.uint8)


def _integer_range(array: np.ndarray) -> tuple[float, float]:
    """(0, 2**bits - 1) for the image's bit depth, so a dark 16-bit image stays dark.

    uint16 declares 16 bits. Wider integer types (PIL's mode I, int32/int64 arrays) often hold
    narrower data, so the depth is the smallest of 8, 16, 32 bits that holds the largest value.
    Negative values have no standard meaning: such an image is rescaled from its min..max.
    """
    low, high = int(array.min()), int(array.max())
    if low < 0:
        return float(low), float(high)
    if array.dtype == np.uint16:
        return 0.0, 65535.0
    bits = next((b for b in (8, 16, 32) if high < 2 ** b), 64)
    return 0.0, float(2 ** bits - 1)


def _finish(array: np.ndarray, issues: list[str]) -> np.ndarray:
    """uint8 [H, W, 3] from uint8 gray, gray+alpha, RGB or RGBA: alpha over white, gray to RGB."""
    if array.ndim == 2:
        array = array[:, :, None]
    channels = array.shape[2]
    if channels in (2, 4):
        color, alpha = array[:, :, :-1], array[:, :, -1:]
        if (alpha < 255).any():
            issues.append("alpha")
            a = alpha.astype(np.uint32)
            # Rounded integer "over": color * a + white * (1 - a), in 0..255 units.
            color = ((color * a + _BACKGROUND * (255 - a) + 127) // 255).astype(np.uint8)
        array = color
    if array.shape[2] == 1:
        issues.append("grayscale")
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array)


def _fit(image: Image.Image, resolution: int, fit: str, issues: list[str]) -> Image.Image:
    """The RGB image cropped or padded to a square and resized to resolution x resolution."""
    w, h = image.size
    side = min(w, h) if fit == "crop" else max(w, h)
    if side < resolution:
        issues.append("upscaled")
    if fit == "crop":
        # Integer offsets: a half-pixel box would blur an image that needs no resize.
        left, top = (w - side) // 2, (h - side) // 2
        box = (left, top, left + side, top + side)
        if side == resolution:
            return image.crop(box)
        return image.resize((resolution, resolution), _RESAMPLE, box=box, reducing_gap=_REDUCING_GAP)
    # Resize first, then pad: cheaper, and the content's edges are not blended with the border.
    size = (max(1, round(w * resolution / side)), max(1, round(h * resolution / side)))
    if size != (w, h):
        image = image.resize(size, _RESAMPLE, reducing_gap=_REDUCING_GAP)
    if size == (resolution, resolution):
        return image
    canvas = Image.new("RGB", (resolution, resolution), (_BACKGROUND,) * 3)
    canvas.paste(image, ((resolution - size[0]) // 2, (resolution - size[1]) // 2))
    return canvas
