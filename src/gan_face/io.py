"""Image loading: every supported kind of input becomes one RGB ``uint8`` array here, and only here.

Files are recognised by their content, never by their name. What a social network does to an avatar (EXIF
rotation, transparency, palette or 16-bit modes, animation) is undone the same way for every input type, so a
file's path, its bytes, its PIL image and its array all give the same pixels.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import (
    CorruptImageError,
    ImageNotFoundError,
    ImageTooLargeError,
    NotAnImageError,
    UnsupportedInputError,
)

ImageInput = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview, BinaryIO, Image.Image, np.ndarray]

#: Default pixel limit (width x height). Avatars are well under a megapixel; 64 MP still admits any camera photo.
DEFAULT_MAX_PIXELS = 64_000_000
#: Transparent pixels are composited onto this mid grey, so that neither class gets a tell-tale white or black.
NEUTRAL_BACKGROUND = (128, 128, 128)


def describe_source(source: object) -> str:
    """A short human name for an input, used in error messages and reports."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    if isinstance(source, Image.Image):
        return f"<PIL image {source.mode} {source.width}x{source.height}>"
    if isinstance(source, np.ndarray):
        return f"<array {source.dtype} {'x'.join(map(str, source.shape))}>"
    name = getattr(source, "name", None)
    if isinstance(name, (str, os.PathLike)):
        return os.fspath(name)
    return f"<{type(source).__name__}>"


def load_image(source: ImageInput, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Return ``source`` as an ``H x W x 3`` RGB ``uint8`` array.

    ``source`` is a path (``str`` or ``os.PathLike``), the encoded bytes of an image, a binary file object, a PIL
    image or a numpy array (``HxW`` grey, ``HxWx1``, ``HxWx3`` RGB or ``HxWx4`` RGBA; ``uint8``, ``uint16`` or
    float in [0, 1]). EXIF orientation is applied, transparency is composited onto a neutral grey, animated images
    give their first frame. ``max_pixels`` (``None``: no limit) refuses larger images from their header alone,
    before decoding, so a decompression bomb costs nothing.

    Raises a subclass of :class:`gan_face.errors.ImageLoadError` whose message names the input and the problem.
    """
    name = describe_source(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, name, max_pixels)
    if isinstance(source, Image.Image):
        _check_pixels(source.width, source.height, name, max_pixels)
        return _decode(source, name)
    if isinstance(source, (str, os.PathLike)):
        return _decode_file(Path(source), name, max_pixels)
    return _decode_stream(io.BytesIO(_read_bytes(source, name)), name, max_pixels)


def _read_bytes(source: object, name: str) -> bytes:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source)
    if hasattr(source, "read"):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise UnsupportedInputError(name, "file object must be opened in binary mode ('rb')")
        return bytes(data)
    raise UnsupportedInputError(name, "expected a path, bytes, a binary file object, a PIL image or a numpy array")


def _decode_file(path: Path, name: str, max_pixels: int | None) -> np.ndarray:
    """Decode from the file itself, so a huge file is refused from its header without being read whole."""
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        raise ImageNotFoundError(name, "no such file") from None
    except IsADirectoryError:
        raise ImageNotFoundError(name, "is a folder, not an image file") from None
    except OSError as exc:
        raise CorruptImageError(name, f"cannot be read ({exc.strerror or exc})") from None
    with handle:
        return _decode_stream(handle, name, max_pixels)


def _decode_stream(stream: BinaryIO, name: str, max_pixels: int | None) -> np.ndarray:
    if not stream.read(1):
        raise CorruptImageError(name, "empty file (0 bytes)")
    stream.seek(0)
    try:
        with warnings.catch_warnings():
            # We apply our own pixel limit below; Pillow's own check is only a warning below twice its limit.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(stream)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(name, _pillow_bomb_message(exc)) from None
    except UnidentifiedImageError:
        raise NotAnImageError(name, "not an image (content is not in any format Pillow reads)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise CorruptImageError(name, f"damaged image header ({exc})") from None
    with image:
        _check_pixels(image.width, image.height, name, max_pixels)
        return _decode(image, name)


def _pillow_bomb_message(exc: Exception) -> str:
    return (
        f"refused as a possible decompression bomb by Pillow's own limit ({exc}); if the image is genuine, raise "
        "that limit with --max-pixels on the command line (it raises both), or from Python with "
        "PIL.Image.MAX_IMAGE_PIXELS as well as max_pixels="
    )


def _check_pixels(width: int, height: int, name: str, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise CorruptImageError(name, f"image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            name,
            f"{width}x{height} = {width * height:,} pixels exceeds the limit of {max_pixels:,} "
            "(possible decompression bomb; raise it with max_pixels= or --max-pixels if the image is genuine)",
        )


def _decode(image: Image.Image, name: str) -> np.ndarray:
    try:
        if getattr(image, "is_animated", False):
            image.seek(0)
        image.load()
        image = ImageOps.exif_transpose(image)
        return _to_rgb_array(image)
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(name, _pillow_bomb_message(exc)) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImageError(name, f"image data is damaged or truncated ({exc})") from None


def _to_rgb_array(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode == "P" or mode == "PA":
        image = image.convert("RGBA")  # a palette may carry transparency
        mode = "RGBA"
    if mode.startswith("I;16"):
        return _grey_to_rgb(_sixteen_bit_to_uint8(np.asarray(image)))
    if mode in ("I", "F"):
        return _grey_to_rgb(_high_bit_depth_to_uint8(np.asarray(image)))
    if mode in ("RGBA", "LA", "RGBa", "La"):
        rgba = np.asarray(image.convert("RGBA"))
        return _composite(rgba)
    if mode != "RGB":
        image = image.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def _sixteen_bit_to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values.astype(np.float64) * (255.0 / 65535.0)), 0, 255).astype(np.uint8)


def _high_bit_depth_to_uint8(values: np.ndarray) -> np.ndarray:
    """32-bit integer or float images carry no range: above 255 they are read as 16-bit, else as 8-bit."""
    values = values.astype(np.float64)
    scale = 255.0 / 65535.0 if values.max(initial=0) > 255 else 1.0
    return np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))


def _composite(rgba: np.ndarray) -> np.ndarray:
    alpha = rgba[:, :, 3:4].astype(np.float32) / 255.0
    background = np.asarray(NEUTRAL_BACKGROUND, dtype=np.float32)
    rgb = rgba[:, :, :3].astype(np.float32) * alpha + background * (1.0 - alpha)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _from_array(array: np.ndarray, name: str, max_pixels: int | None) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise UnsupportedInputError(name, "expected an HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) array")
    _check_pixels(array.shape[1], array.shape[0], name, max_pixels)
    if array.dtype == np.uint8:
        pass
    elif array.dtype == np.uint16:
        array = _sixteen_bit_to_uint8(array)
    elif array.dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise UnsupportedInputError(name, "float arrays must hold finite values in [0, 1]")
        array = np.clip(np.rint(array * 255.0), 0, 255).astype(np.uint8)
    else:
        raise UnsupportedInputError(
            name, f"unsupported dtype {array.dtype} (use uint8, uint16 or float in [0, 1])"
        )
    if array.ndim == 2:
        return _grey_to_rgb(array)
    if array.shape[2] == 4:
        return _composite(array)
    return np.ascontiguousarray(array)
