"""Decoding one image file to a fitted uint8 array, as `fit_images` makes it: shared by
the prepared cache (`coatsearch.data.prepared`) and by data streamed per batch
(`coatsearch.data.stream`).

A JPEG at least twice the target side is decoded shrunken, straight from the DCT, at the
scale Pillow's ``draft`` mode picks: through simplejpeg for RGB JPEGs, through Pillow for
the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from coatsearch.data.errors import DataError
from coatsearch.data.listing import GRAY_MODES

try:  # a dependency; where its wheel is missing, Pillow decodes everything (see `_decode_scaled_jpeg`)
    import simplejpeg as _simplejpeg
except ImportError:  # pragma: no cover - exercised where the wheel is missing
    _simplejpeg = None

#: File suffixes worth trying simplejpeg on (others are not read twice).
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})

#: File suffixes worth trying simplejpeg on (others are not read twice).
JPEG_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".jfif"})
READ_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
#: Files whose headers are read per batch when finding a folder's mode.
HEADER_BATCH = 1024

#: True in a decoding process of a pool (its resizes then use one torch thread).
_in_worker = False


def mark_worker_process() -> None:
    """Called in each decoding process of a pool: resizes there use one torch thread."""
    global _in_worker
    _in_worker = True


#: Gray modes whose RGB conversion replicates the gray value exactly: a set of them all is
#: decoded as RGB and keeps channel 0, with no separate pass to find the set's mode.
REPLICATED_GRAY = frozenset({"1", "L"})


def draft_scale(width: int, height: int, size: int) -> int:
    """The JPEG scale (1, 2, 4 or 8) that draft decoding uses for a target side ``size``:
    Pillow's rule in ``JpegImageFile.draft`` for the request `_decode` makes (a power of two
    at most ``short side // size``, so the decoded short side is never below ``size``)."""
    scale = min(width, height) // size
    if scale < 2:
        return 1
    request = (width // scale, height // scale)
    fits = min(width // request[0], height // request[1])
    return next(s for s in (8, 4, 2, 1) if fits >= s)


def draft_shape(width: int, height: int, size: int) -> tuple[int, int]:
    """``(height, width)`` of a JPEG decoded at its `draft_scale` (sides rounded up, as
    libjpeg's scaled decode and Pillow's ``draft`` round them)."""
    scale = draft_scale(width, height, size)
    return (height + scale - 1) // scale, (width + scale - 1) // scale


def _decode_scaled_jpeg(path: Path, mode: str, size: int, modes: set[str] | None) -> np.ndarray | None:
    """An RGB JPEG decoded by simplejpeg at the draft scale, ``(H, W, 3)``; None where that
    does not apply (no simplejpeg, not a 3-channel JPEG, another mode, over Pillow's
    decompression-bomb limit, a decode error or an unexpected size) and Pillow decodes,
    or raises the error that names the file.

    Both call libjpeg-turbo's scaled inverse DCT with the same settings (accurate DCT, fancy
    upsampling), so the pixels are Pillow's draft pixels (a test checks it); simplejpeg
    skips Pillow's Python-side marker parsing and copies, about 25% less time a file.
    """
    if _simplejpeg is None or mode != "RGB" or path.suffix.lower() not in JPEG_SUFFIXES:
        return None
    try:
        data = path.read_bytes()
        if not _simplejpeg.is_jpeg(data):
            return None
        height, width, colorspace, _ = _simplejpeg.decode_jpeg_header(data)
        if colorspace not in ("YCbCr", "RGB") or (Image.MAX_IMAGE_PIXELS and width * height > 2 * Image.MAX_IMAGE_PIXELS):
            return None
        shape = draft_shape(width, height, size)
        array = _simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=shape[0], min_width=shape[1])
    except (OSError, ValueError):
        return None  # Pillow reads it again and names the error
    if array.shape[:2] != shape:
        return None
    if modes is not None:
        modes.add("RGB")
    return array


def needs_resize(path: Path, size: int, draft: bool) -> bool:
    """Whether ``path`` (a folder's first image, its header only) decodes to another short
    side than ``size``: then `decode_fitted` resizes with torch, most likely for the whole
    folder. False for an unreadable file (the decode names it)."""
    try:
        with Image.open(path) as image:
            width, height = image.size
            scaled = draft and image.format in ("JPEG", "MPO")
    except READ_ERRORS:
        return False
    return min(draft_shape(width, height, size) if scaled else (height, width)) != size


#: Pillow's modes of one channel with more than 8 bits (16-bit PNGs open as I;16 or I).
WIDE_GRAY = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})


def eight_bit(image: Image.Image) -> Image.Image:
    """A gray image of more than 8 bits scaled to 8 (0..65535 to 0..255; a float image's
    values clipped to 0..255): Pillow's own conversion clips, which turns a 16-bit image white."""
    if image.mode not in WIDE_GRAY:
        return image
    values = np.asarray(image)
    if image.mode != "F":
        values = values.astype(np.float64) / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(values), 0, 255).astype(np.uint8), mode="L")


def _decode(path: Path, mode: str, size: int, draft: bool, modes: set[str] | None) -> np.ndarray:
    """One image file as uint8 ``(H, W)`` or ``(H, W, C)`` in ``mode``, at the draft scale
    with ``draft``."""
    if draft:
        array = _decode_scaled_jpeg(path, mode, size, modes)
        if array is not None:
            return array
    try:
        with Image.open(path) as image:
            if modes is not None:
                modes.add(image.mode)
            if draft and image.format in ("JPEG", "MPO"):  # MPO: multi-picture JPEG (cameras)
                scale = min(image.size) // size
                if scale >= 2:
                    # keep the short side >= size after scaling (draft keeps the aspect)
                    image.draft(mode, (image.size[0] // scale, image.size[1] // scale))
            return np.asarray(eight_bit(image).convert(mode), dtype=np.uint8)
    except READ_ERRORS as exc:
        raise DataError(f"{path}: unreadable image ({exc})") from None


def decode_fitted(path: Path, mode: str, size: int, draft: bool = True, modes: set[str] | None = None) -> np.ndarray:
    """One image file as uint8 ``(C, size, size)``, as `fit_images` makes it; `DataError`
    naming the file when it cannot be read. ``modes`` collects the files' own modes.

    With ``draft``, a JPEG at least twice the target side is decoded at a reduced scale
    (1/2, 1/4 or 1/8, never below the target side): several times faster, and the resize
    that follows starts from a DCT-downscaled image instead of the full one.
    """
    array = _decode(path, mode, size, draft, modes)
    if array.ndim == 2:
        array = array[:, :, None]
    height, width = array.shape[:2]
    side = min(height, width)
    if side == size:  # the centre crop of `fit_images` is all there is to do (draft output, often)
        top, left = (height - side) // 2, (width - side) // 2
        return array[top : top + side, left : left + side].transpose(2, 0, 1)
    # a resize: torch's, as `data.mode: memory` does it (imported here, not at the top: a
    # folder whose draft output is already the size is prepared without loading torch)
    import torch

    from coatsearch.data.images import fit_images

    if _in_worker:
        torch.set_num_threads(1)
    tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
    return fit_images(tensor.unsqueeze(0), size)[0].numpy()


def _modes(paths: Sequence[str], skip: bool = False) -> tuple[set[str], str | None]:
    """The Pillow modes of some files (headers only), and the first unreadable one (passed
    over with ``skip``)."""
    found: set[str] = set()
    for p in paths:
        try:
            with Image.open(p) as image:
                found.add(image.mode)
        except READ_ERRORS as exc:
            if not skip:
                return found, f"{p}: unreadable image ({exc})"
    return found, None


def mode_of_all(paths: list[Path], skip: bool = False) -> str:
    """``L`` when every (readable, with ``skip``) file is gray, else ``RGB`` (headers only)."""
    chunks = [[str(p) for p in paths[i : i + HEADER_BATCH]] for i in range(0, len(paths), HEADER_BATCH)]
    results = (_modes(chunk, skip) for chunk in chunks)
    found: set[str] = set()
    for modes, error in results:
        if error:
            raise DataError(error)
        found |= modes
    return "L" if found <= GRAY_MODES else "RGB"
