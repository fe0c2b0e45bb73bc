"""Image files: decode to RGB uint8, read sizes from headers, detect truncated files cheaply.

Every image enters detkit through :func:`read_image` and leaves it as an (H, W, 3) uint8 RGB
array, whatever the file holds:

- grayscale (L, 1, LA), palette (P), RGBA, CMYK and YCbCr images are converted to RGB
  (an alpha channel is dropped, as OpenCV does);
- 16-bit and 32-bit integer images (I;16, I) are scaled to 8 bits (value / 257, i.e. the 16-bit
  range [0, 65535] maps onto [0, 255]); float images (F) in [0, 1] are scaled by 255, others clipped;
- the EXIF orientation tag is applied, so the array is the image as a viewer displays it.
  **Boxes are taken in that displayed (orientation-applied) frame**, and so are the sizes
  returned by :func:`read_image_size`. An annotation whose recorded size matches the stored,
  unrotated frame instead is reported as a size mismatch by the data sets.
  Only the values 1..8 are orientations (1 = upright). Any other value of the tag (0, 9, 65537
  stored as a LONG, a negative number, text, a fraction) is an invalid tag: ignored, as Pillow's
  ``ImageOps.exif_transpose`` ignores it, so the image is used as stored; the header readers return
  the value (see :func:`read_image_size`) and the data sets count it (exif_invalid_ignored).

Only Pillow is used for decoding, so the same bytes give the same pixels in every process.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

import numpy as np
from PIL import Image

from detkit.data.jpeg_header import read_plain_jpeg_header
from detkit.errors import DataError

__all__ = ["checked_image_size", "read_image", "read_image_size", "truncation_problem", "IMAGE_EXTENSIONS",
           "ORIENTATION_NOT_AN_INTEGER", "is_valid_orientation", "describe_orientation"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")

_EXIF_ORIENTATION = 0x0112
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # the orientations that turn the image by 90 degrees
# What each valid orientation other than 1 does to the stored image to display it (Pillow's
# ImageOps.exif_transpose table).
_TRANSPOSES = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# The orientation the header readers give for a tag that holds no whole number (text, bytes, a
# fraction such as 13/2) or one beyond +-2**62 (a BigTIFF LONG8, a huge DOUBLE): far outside what EXIF's
# SHORT / LONG / SLONG types hold, so it names no real value, and it fits the int64 header cache.
ORIENTATION_NOT_AN_INTEGER = -(2 ** 62)


def is_valid_orientation(orientation: int) -> bool:
    """True for the EXIF orientations 1..8 (applied on load when not 1); False for an invalid tag."""
    return 1 <= orientation <= 8


def describe_orientation(orientation: int) -> str:
    """The orientation as the data report's examples show it (an invalid tag's value, or what it holds)."""
    if orientation == ORIENTATION_NOT_AN_INTEGER:
        return "not an integer (text, a fraction or out of range)"
    return str(orientation)


def _exif_orientation(img: Image.Image) -> int:
    """The orientation tag of `img` as the header readers report it: 1 when there is none (or the EXIF
    block is broken), the tag's whole-number value otherwise (valid or not), ORIENTATION_NOT_AN_INTEGER
    for anything else.

    A value equal to a whole number (6, 6.0, the rational 6/1) counts as that number, as it does for
    ``ImageOps.exif_transpose`` (a dict lookup); text ("6"), bytes and 13/2 are invalid.
    """
    try:
        value = img.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a broken EXIF block is not a broken image: treat it as upright
        return 1
    if isinstance(value, (str, bytes)):  # float() would parse "6", which exif_transpose does not apply
        return ORIENTATION_NOT_AN_INTEGER
    try:
        number = value if isinstance(value, int) else float(value)  # float, IFDRational
    except (TypeError, ValueError):
        return ORIENTATION_NOT_AN_INTEGER  # a tuple, ...
    if isinstance(number, float) and not number.is_integer():
        return ORIENTATION_NOT_AN_INTEGER  # 6.5, nan, inf
    number = int(number)
    return number if abs(number) < 2 ** 62 else ORIENTATION_NOT_AN_INTEGER


def read_image_size(path: str) -> Tuple[int, int, int]:
    """Height, width (in the EXIF-applied frame) and EXIF orientation from the header only.

    Returns:
        (h, w, orientation): orientation 1..8 is an orientation (1 = upright / no tag; 5..8 swap h
        and w); any other value is an invalid tag (its value, or ORIENTATION_NOT_AN_INTEGER), which
        :func:`read_image` ignores: (h, w) are then the stored size, as read_image decodes it.

    Raises:
        DataError: the file is missing or its header cannot be read.
    """
    try:
        with open(path, "rb") as f:
            fast = read_plain_jpeg_header(f, os.fstat(f.fileno()).st_size)
    except FileNotFoundError:
        raise DataError(f"image file '{path}' does not exist") from None
    except OSError:
        fast = None  # Pillow says what is wrong below
    if fast is not None:  # a plain JPEG: the same answer as Pillow's, without Pillow's overhead
        return fast
    return _pillow_image_size(path)


def _pillow_image_size(path: str) -> Tuple[int, int, int]:
    """:func:`read_image_size` through Pillow, for any format (the reference of the JPEG shortcut)."""
    try:
        with Image.open(path) as img:
            w, h = img.size
            orientation = _exif_orientation(img)
    except FileNotFoundError:
        raise DataError(f"image file '{path}' does not exist") from None
    except Exception as exc:
        raise DataError(f"image file '{path}' cannot be read: {exc}") from None
    if orientation in _SWAPPING_ORIENTATIONS:
        w, h = h, w
    return h, w, orientation


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        if mode == "I" and arr.size and arr.max() <= 255 and arr.min() >= 0:
            gray = arr
        else:
            gray = arr / 257.0
        gray = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        arr = np.asarray(img).astype(np.float64)
        if arr.size and arr.max() <= 1.0 and arr.min() >= 0.0:
            arr = arr * 255.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, 1, LA, RGBA (alpha dropped), CMYK, YCbCr, P
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8))


def read_image(path: str) -> np.ndarray:
    """Decode an image file into an (H, W, 3) uint8 RGB array with EXIF orientation applied (an
    invalid orientation tag is ignored: the image as stored, the size :func:`read_image_size` gives).

    Raises:
        DataError: the file is missing, truncated or not a readable image. The message names the file
            and the decoding problem only: what to do about it depends on the caller (a data set adds
            its advice, ``detkit infer`` skips the file), so it is added there.
    """
    try:
        with Image.open(path) as img:
            img.load()
            transpose = _TRANSPOSES.get(_exif_orientation(img))  # None: upright, or an invalid tag
            if transpose is not None:
                img = img.transpose(transpose)
            return _to_rgb_array(img)
    except FileNotFoundError:
        raise DataError(f"image file '{path}' does not exist") from None
    except DataError:
        raise
    except Exception as exc:  # PIL raises OSError / SyntaxError / ValueError on broken files
        raise DataError(f"image file '{path}' cannot be decoded ({type(exc).__name__}: {exc})") from None


def truncation_problem(path: str) -> Optional[str]:
    """A cheap end-of-file check: why `path` looks truncated, or None when it looks complete.

    JPEG files should end with the EOI marker (FF D9) within their last 1 KiB; PNG files with an IEND
    chunk. Other formats are not checked here (decoding catches them), nor is a file's extension. Only
    the last bytes are read, so a complete file costs one seek. A file that fails this check is decoded
    before it is called truncated: one whose marker is followed by more padding (files cut to a block
    size by a downloader look like this) decodes completely and is good.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head, tail = _ends(f, size)
    except FileNotFoundError:
        return "file does not exist"
    except OSError as exc:
        return f"cannot be read ({exc})"
    return _truncation_verdict(path, size, head, tail)


def checked_image_size(path: str) -> Tuple[int, int, int]:
    """:func:`truncation_problem` and then :func:`read_image_size`, opening a complete JPEG only once.

    Returns:
        (h, w, orientation) as :func:`read_image_size`.

    Raises:
        DataError: "image file '<path>': <the truncation problem>", or read_image_size's errors.
    """
    fast = None
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head, tail = _ends(f, size)
            problem = _truncation_verdict(path, size, head, tail)
            if problem is None:
                try:
                    f.seek(0)
                    fast = read_plain_jpeg_header(f, size)
                except OSError:
                    fast = None  # Pillow says what is wrong below
    except FileNotFoundError:
        problem = "file does not exist"
    except OSError as exc:
        problem = f"cannot be read ({exc})"
    if problem is not None:
        raise DataError(f"image file '{path}': {problem}")
    return fast if fast is not None else _pillow_image_size(path)


def _ends(f, size: int) -> Tuple[bytes, bytes]:
    """The first 8 bytes and the last KiB of the open file `f` of `size` bytes."""
    head = f.read(8)
    f.seek(max(0, size - 1024))
    return head, f.read()


def _truncation_verdict(path: str, size: int, head: bytes, tail: bytes) -> Optional[str]:
    if size == 0:
        return "file is empty"
    if head.startswith(b"\xff\xd8"):  # by content, not by extension (odd extensions are common)
        if b"\xff\xd9" not in tail:
            return _confirm_truncation(path, "JPEG", b"\xff\xd9", b"\xff\xda")
    elif head.startswith(b"\x89PNG"):
        if b"IEND" not in tail[-16:]:
            return _confirm_truncation(path, "PNG", b"IEND", b"IDAT")
    return None


def _confirm_truncation(path: str, kind: str, end_marker: bytes, data_marker: bytes) -> Optional[str]:
    """The full check of a file whose last bytes lack its end marker: why it is truncated, or None.

    Good files land here too: zero padding after the marker (files cut to a block size), or other
    data appended after it (camera trailers). So the file is decoded, and it is called truncated only
    when decoding fails, or when it decodes (decoders fill in missing data silently) but no end
    marker follows its first image-data marker (SOS for JPEG, IDAT for PNG; the first, because the
    data after the true end marker may hold any bytes, and a JPEG's EXIF thumbnail, which has an end
    marker of its own, comes before it).
    """
    try:
        with Image.open(path) as img:
            img.load()
    except Exception as exc:  # PIL raises OSError / SyntaxError / ValueError on broken files
        return f"{kind} file is truncated (decoding fails: {type(exc).__name__}: {exc})"
    with open(path, "rb") as f:
        data = f.read()
    if data.find(end_marker, max(data.find(data_marker), 0)) < 0:
        return f"{kind} file is truncated (its image data stops before the end-of-image marker)"
    return None
