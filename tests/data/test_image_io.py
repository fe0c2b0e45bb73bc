"""detkit/data/image_io.py: every image kind loads as RGB uint8; EXIF applied; truncation detected."""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import pytest
from PIL import Image

from detkit.data.image_io import (
    ORIENTATION_NOT_AN_INTEGER,
    _pillow_image_size,
    checked_image_size,
    describe_orientation,
    is_valid_orientation,
    read_image,
    read_image_size,
    truncation_problem,
)
from detkit.data.jpeg_header import read_plain_jpeg_header
from detkit.errors import DataError


def _check_rgb(arr, h, w):
    assert arr.dtype == np.uint8 and arr.shape == (h, w, 3)


@pytest.mark.parametrize("mode", ["L", "1", "LA", "RGBA", "P", "CMYK"])
def test_modes_load_as_rgb(tmp_path, mode):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    img = rgb.convert(mode)
    path = tmp_path / ("x.jpg" if mode == "CMYK" else "x.png")
    img.save(path)
    arr = read_image(str(path))
    _check_rgb(arr, 20, 30)
    if mode == "L":
        assert np.array_equal(arr[..., 0], np.asarray(img)) and np.array_equal(arr[..., 0], arr[..., 2])
    if mode == "RGBA":
        assert np.array_equal(arr, np.asarray(rgb))  # alpha dropped, colour kept


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (8, 6))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    img.info["transparency"] = 0
    img.save(tmp_path / "p.png", transparency=0)
    _check_rgb(read_image(str(tmp_path / "p.png")), 6, 8)


def test_16bit_grayscale_scaled_to_8bit(tmp_path):
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g16.png")
    arr = read_image(str(tmp_path / "g16.png"))
    _check_rgb(arr, 1, 4)
    assert arr[0, :, 0].tolist() == [0, 1, 255, 128]


def test_exif_orientation_applied_and_size_in_rotated_frame(tmp_path):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :10] = 255  # a white band on the left of the stored image
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    img.save(tmp_path / "r.jpg", exif=exif, quality=95)
    h, w, orientation = read_image_size(str(tmp_path / "r.jpg"))
    assert (h, w, orientation) == (40, 20, 6)
    out = read_image(str(tmp_path / "r.jpg"))
    _check_rgb(out, 40, 20)
    assert out[:10].mean() > 200 and out[-10:].mean() < 50  # left band is now at the top


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    (tmp_path / "ok.jpg").write_bytes(data)
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    assert truncation_problem(str(tmp_path / "ok.jpg")) is None
    assert "truncated" in truncation_problem(str(tmp_path / "cut.jpg"))
    with pytest.raises(DataError, match="cut.jpg"):
        read_image(str(tmp_path / "cut.jpg"))


@pytest.mark.parametrize("padding", [1024, 4096, 65536])
def test_padding_after_the_end_marker_is_not_truncation(tmp_path, padding):
    """Files cut to a block size by a downloader: the image is whole, zeros follow its end marker."""
    pixels = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    for fmt, name in (("JPEG", "padded.jpg"), ("PNG", "padded.png")):
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt)
        (tmp_path / name).write_bytes(buf.getvalue() + bytes(padding))
        assert truncation_problem(str(tmp_path / name)) is None, (fmt, padding)
        _check_rgb(read_image(str(tmp_path / name)), 48, 64)
        # Any bytes after the end marker (camera trailers), markers among them, are not truncation either.
        trailer = np.random.default_rng(padding).integers(0, 256, padding, dtype=np.uint8).tobytes()
        (tmp_path / name).write_bytes(buf.getvalue() + b"\xff\xda" + trailer)
        assert truncation_problem(str(tmp_path / name)) is None, (fmt, padding, "trailer")
    # The same padding after a truly cut file: still truncated (decoders fill the missing part in
    # silently, but no end marker follows the image data).
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG")
    (tmp_path / "cut_padded.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2] + bytes(padding))
    problem = truncation_problem(str(tmp_path / "cut_padded.jpg"))
    assert problem is not None and "truncated" in problem


def test_truncated_png_and_garbage(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG")
    (tmp_path / "cut.png").write_bytes(buf.getvalue()[:-20])
    assert "truncated" in truncation_problem(str(tmp_path / "cut.png"))
    (tmp_path / "junk.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match="junk.jpg"):
        read_image(str(tmp_path / "junk.jpg"))
    with pytest.raises(DataError, match="does not exist"):
        read_image(str(tmp_path / "missing.jpg"))


def test_checked_image_size_is_truncation_check_then_header(tmp_path):
    """checked_image_size (one open) answers as truncation_problem followed by read_image_size."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(buf, "JPEG")
    data = buf.getvalue()
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 9, 3), np.uint8)).save(png, "PNG")
    files = {"ok.jpg": data, "cut.jpg": data[: len(data) // 2], "padded.jpg": data + b"\0" * 4096,
             "empty.jpg": b"", "junk.jpg": b"not an image at all", "ok.png": png.getvalue(),
             "cut.png": png.getvalue()[:-20]}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    for name in [*files, "missing.jpg"]:
        path = str(tmp_path / name)
        try:
            problem = truncation_problem(path)
            expected = DataError(f"image file '{path}': {problem}") if problem else read_image_size(path)
        except DataError as exc:
            expected = exc
        try:
            got = checked_image_size(path)
        except DataError as exc:
            got = exc
        assert type(got) is type(expected) and str(got) == str(expected), name
    assert checked_image_size(str(tmp_path / "ok.jpg")) == (40, 56, 1)
    assert checked_image_size(str(tmp_path / "ok.png")) == (8, 9, 1)


# --------------------------------------------------------------------------- invalid EXIF orientation tags
def _exif_block(tag_type: int, count: int, value: bytes) -> bytes:
    """An EXIF block written by hand (Intel byte order): a TIFF header and one IFD holding only the
    orientation entry, of any TIFF type (Pillow writes the tag as a SHORT only)."""
    ifd = struct.pack("<H", 1) + struct.pack("<HHL", 0x0112, tag_type, count) + value + b"\0\0\0\0"
    return b"Exif\0\0" + b"II*\0" + struct.pack("<L", 8) + ifd


# name -> (EXIF block, the orientation read_image_size reports, whether the JPEG header shortcut reads it)
ORIENTATION_TAGS = {
    "short_0": (_exif_block(3, 1, struct.pack("<H2x", 0)), 0, True),
    "short_9": (_exif_block(3, 1, struct.pack("<H2x", 9)), 9, True),
    "short_65535": (_exif_block(3, 1, struct.pack("<H2x", 65535)), 65535, True),
    "long_65537": (_exif_block(4, 1, struct.pack("<L", 65537)), 65537, False),  # too big for a SHORT
    "sshort_minus_1": (_exif_block(8, 1, struct.pack("<h2x", -1)), -1, False),
    "ascii_6": (_exif_block(2, 2, b"6\0\0\0"), ORIENTATION_NOT_AN_INTEGER, False),
    "float_6.5": (_exif_block(11, 1, struct.pack("<f", 6.5)), ORIENTATION_NOT_AN_INTEGER, False),
    "byte_6": (_exif_block(1, 1, b"\x06\0\0\0"), ORIENTATION_NOT_AN_INTEGER, False),  # Pillow reads bytes
    # valid orientations, for contrast: applied, whatever type holds them
    "short_6": (_exif_block(3, 1, struct.pack("<H2x", 6)), 6, True),
    "long_6": (_exif_block(4, 1, struct.pack("<L", 6)), 6, False),
    "float_6": (_exif_block(11, 1, struct.pack("<f", 6.0)), 6, False),
}


def _stored_pixels(h=20, w=30):
    return np.random.default_rng(3).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["jpg", "png"])
@pytest.mark.parametrize("name", sorted(ORIENTATION_TAGS))
def test_orientation_tags_read_size_and_decode_agree(tmp_path, name, fmt):
    """1..8 are orientations (applied; 5..8 swap the size); anything else is an invalid tag, reported
    with its value and ignored: the header size is the stored size, and read_image decodes the image
    as stored. The JPEG shortcut and Pillow answer the same."""
    exif, expected, shortcut = ORIENTATION_TAGS[name]
    pixels = _stored_pixels()
    path = tmp_path / f"{name}.{fmt}"
    Image.fromarray(pixels).save(path, exif=exif, **({"quality": 95} if fmt == "jpg" else {}))
    h, w, orientation = read_image_size(str(path))
    assert orientation == expected
    assert (h, w) == ((30, 20) if orientation == 6 else (20, 30))
    assert is_valid_orientation(orientation) == (orientation == 6)
    assert read_image_size(str(path)) == _pillow_image_size(str(path)) == checked_image_size(str(path))
    with open(path, "rb") as f:
        fast = read_plain_jpeg_header(f, os.path.getsize(path))
    assert (fast is not None) == (shortcut and fmt == "jpg")
    assert fast is None or fast == (h, w, orientation)
    image = read_image(str(path))
    assert image.shape == (h, w, 3)  # boxes taken in the header's frame land on the decoded pixels
    with Image.open(path) as raw:
        stored = np.asarray(raw.convert("RGB"))
    expected_pixels = stored if orientation != 6 else np.ascontiguousarray(np.rot90(stored, -1))  # 6: 90 deg CW
    assert np.array_equal(image, expected_pixels)


def test_invalid_orientation_is_described_in_the_report_examples():
    assert describe_orientation(65537) == "65537"
    assert "not an integer" in describe_orientation(ORIENTATION_NOT_AN_INTEGER)
    assert [o for o in range(-1, 11) if is_valid_orientation(o)] == list(range(1, 9))


def test_decode_error_names_the_file_and_problem_only(tmp_path):
    """read_image's message holds no advice: a data set adds its own, and `detkit infer` (which skips the
    file) prints it as "skipped: <message>"."""
    (tmp_path / "junk.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    with pytest.raises(DataError) as info:
        read_image(str(tmp_path / "junk.jpg"))
    message = str(info.value)
    assert message.startswith(f"image file '{tmp_path / 'junk.jpg'}' cannot be decoded (")
    assert message.endswith(")") and "skip_bad_images" not in message
