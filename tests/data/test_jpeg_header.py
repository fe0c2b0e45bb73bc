"""detkit/data/jpeg_header.py: the fast JPEG header reader answers exactly as Pillow does, or not at all.

The reference is image_io._pillow_image_size, the Pillow path that read_image_size took for every file
before the shortcut. Plain files must take the shortcut (else it is dead code); damaged ones may take
it only when Pillow reads them too and gives the same (h, w, orientation).
"""

from __future__ import annotations

import io
import os
import struct

import numpy as np
import pytest
from PIL import Image

from detkit.data.image_io import _pillow_image_size, read_image_size
from detkit.data.jpeg_header import read_plain_jpeg_header
from detkit.errors import DataError


def _fast(path):
    with open(path, "rb") as f:
        return read_plain_jpeg_header(f, os.path.getsize(path))


def _pillow(path):
    try:
        return _pillow_image_size(str(path))
    except DataError as exc:
        return str(exc)


def _image(mode, w, h, seed=0):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 4 if mode == "CMYK" else 3), dtype=np.uint8)
    if mode == "L":
        return Image.fromarray(arr[:, :, 0], "L")
    return Image.fromarray(arr, "CMYK" if mode == "CMYK" else "RGB")


def _exif(orientation=None, extra=True):
    exif = Image.Exif()
    if extra:  # out-of-line values (a string and a rational) around the orientation entry
        exif[0x010F] = "detkit test camera"
        exif[0x011A] = 72.0
    if orientation is not None:
        exif[0x0112] = orientation
    return exif


def _big_endian_exif(orientation):
    """An EXIF block in Motorola byte order (Pillow writes Intel order), with two entries."""
    make = b"camera\0"
    entries = 2
    ifd = struct.pack(">H", entries)
    ifd += struct.pack(">HHL4s", 0x010F, 2, len(make), struct.pack(">L", 8 + 2 + 12 * entries + 4))
    ifd += struct.pack(">HHLH2x", 0x0112, 3, 1, orientation)
    return b"Exif\0\0" + b"MM\0*" + struct.pack(">L", 8) + ifd + b"\0\0\0\0" + make


PLAIN = {
    "rgb_baseline": dict(mode="RGB", size=(64, 48), save={}),
    "gray": dict(mode="L", size=(33, 17), save={}),
    "cmyk_adobe": dict(mode="CMYK", size=(40, 30), save={}),
    "progressive": dict(mode="RGB", size=(50, 70), save={"progressive": True}),
    "optimized_444": dict(mode="RGB", size=(31, 29), save={"optimize": True, "subsampling": 0}),
    "restart_markers": dict(mode="RGB", size=(64, 64), save={"restart_marker_blocks": 2}),
    "comment": dict(mode="RGB", size=(20, 10), save={"comment": b"made by a test"}),
    "icc_profile": dict(mode="RGB", size=(24, 16), save={"icc_profile": b"\0" * 3000}),
    "one_pixel": dict(mode="RGB", size=(1, 1), save={}),
    "wide": dict(mode="L", size=(6000, 2), save={}),
    "exif_without_orientation": dict(mode="RGB", size=(30, 20), save={"exif": _exif(None)}),
    "big_endian_exif": dict(mode="RGB", size=(30, 20), save={"exif": _big_endian_exif(8)}),
    **{f"orientation_{o}": dict(mode="RGB", size=(30, 20), save={"exif": _exif(o)}) for o in range(1, 9)},
    # invalid tags (outside 1..8): read as they are, the size left as stored, as Pillow's path does
    **{f"orientation_{o}": dict(mode="RGB", size=(30, 20), save={"exif": _exif(o, extra=False)})
       for o in (0, 9, 65535)},
    "orientation_only": dict(mode="RGB", size=(30, 20), save={"exif": _exif(6, extra=False)}),
}


def _write(tmp_path, name, spec):
    path = tmp_path / f"{name}.jpg"
    save = dict(spec["save"])
    if isinstance(save.get("exif"), Image.Exif):
        save["exif"] = save["exif"].tobytes()
    _image(spec["mode"], *spec["size"]).save(path, "JPEG", quality=90, **save)
    return path


@pytest.mark.parametrize("name", sorted(PLAIN))
def test_plain_jpegs_take_the_shortcut_and_match_pillow(tmp_path, name):
    path = _write(tmp_path, name, PLAIN[name])
    fast = _fast(path)
    assert fast is not None, f"{name}: a plain JPEG fell back to Pillow"
    assert fast == _pillow(path)
    assert read_image_size(str(path)) == fast


def test_swapping_orientations_swap_the_size(tmp_path):
    path = _write(tmp_path, "o6", PLAIN["orientation_6"])
    assert _fast(path) == (30, 20, 6)  # stored 30 wide x 20 high, displayed 20 wide x 30 high


@pytest.mark.parametrize("orientation", [0, 9, 65535])
def test_invalid_orientations_keep_their_value_and_the_stored_size(tmp_path, orientation):
    path = _write(tmp_path, "bad", PLAIN[f"orientation_{orientation}"])
    assert _fast(path) == (20, 30, orientation) == _pillow(path)  # 0 is no longer read as 1 (upright)


@pytest.mark.parametrize("extra_save", [
    {"xmp": b"<x:xmpmeta><tiff:Orientation>6</tiff:Orientation></x:xmpmeta>"},  # XMP may carry an orientation
])
def test_headers_left_to_pillow(tmp_path, extra_save):
    path = tmp_path / "x.jpg"
    _image("RGB", 30, 20).save(path, "JPEG", **extra_save)
    assert _fast(path) is None
    assert read_image_size(str(path)) == _pillow(path)


def test_other_formats_are_left_to_pillow(tmp_path):
    for ext in ("png", "bmp", "webp"):
        path = tmp_path / f"x.{ext}"
        _image("RGB", 30, 20).save(path)
        assert _fast(path) is None
        assert read_image_size(str(path)) == (20, 30, 1)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert _fast(empty) is None


def test_decompression_bomb_size_is_left_to_pillow(tmp_path, monkeypatch):
    path = _write(tmp_path, "rgb", PLAIN["rgb_baseline"])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64 x 48 = 3072 pixels: over the limit
    assert _fast(path) is None


def _mutants(data, rng, count):
    """Damaged copies of a JPEG: bytes changed, cut, inserted or removed in or near its header."""
    reach = min(len(data), 700)
    for _ in range(count):
        b = bytearray(data)
        kind = rng.integers(4)
        at = int(rng.integers(2, reach))
        if kind == 0:
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(2, reach))] = int(rng.integers(256))
        elif kind == 1:
            b = b[:at]
        elif kind == 2:
            b[at:at] = bytes(rng.integers(0, 256, int(rng.integers(1, 8)), dtype=np.uint8))
        else:
            del b[at:at + int(rng.integers(1, 8))]
        yield bytes(b)


@pytest.mark.parametrize("name", ["orientation_6", "big_endian_exif", "icc_profile", "cmyk_adobe", "comment"])
def test_damaged_headers_never_disagree_with_pillow(tmp_path, name):
    data = _write(tmp_path, name, PLAIN[name]).read_bytes()
    rng = np.random.default_rng(sum(map(ord, name)))
    shortcut = 0
    path = tmp_path / "mutant.jpg"
    for k, mutant in enumerate(_mutants(data, rng, 300)):
        path.write_bytes(mutant)
        fast = _fast(path)
        reference = _pillow(path)
        if fast is not None:
            shortcut += 1
            assert fast == reference, f"mutant {k}: shortcut {fast}, Pillow {reference!r}"
        try:
            answer = read_image_size(str(path))
        except DataError as exc:
            answer = str(exc)
        assert answer == reference, f"mutant {k}"
    assert shortcut > 30  # the mutants that keep a valid header still take the shortcut


@pytest.mark.parametrize("extra", [1, 2, 3])
def test_frame_segment_with_a_cut_component_list(tmp_path, extra):
    """A start-of-frame segment longer than its component list (3 bytes a component): Pillow fails on
    a partial component (extra 1 or 2 bytes) and reads a whole extra one (3)."""
    data = bytearray(_write(tmp_path, "rgb", PLAIN["rgb_baseline"]).read_bytes())
    at = data.index(b"\xff\xc0")
    length = (data[at + 2] << 8) | data[at + 3]
    data[at + 2:at + 4] = (length + extra).to_bytes(2, "big")
    data[at + 2 + length:at + 2 + length] = b"\x01" * extra
    path = tmp_path / "frame.jpg"
    path.write_bytes(bytes(data))
    reference = _pillow(path)
    fast = _fast(path)
    if extra % 3:
        assert isinstance(reference, str) and fast is None
    else:
        assert fast == reference == (48, 64, 1)


def test_missing_file_message_is_unchanged(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_image_size(str(tmp_path / "nope.jpg"))
    with pytest.raises(DataError, match="cannot be read"):
        read_image_size(str(tmp_path))  # a folder


def test_reads_a_segment_beyond_the_first_block(tmp_path):
    """A header longer than the reader's first read (a large comment before the frame)."""
    path = tmp_path / "long.jpg"
    _image("RGB", 30, 20).save(path, "JPEG", comment=b"c" * 20000, exif=_exif(3).tobytes())
    buf = io.BytesIO(path.read_bytes())
    assert read_plain_jpeg_header(buf, len(buf.getvalue())) == (20, 30, 3) == _pillow(path)
