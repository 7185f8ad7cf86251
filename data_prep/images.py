"""Image validation, RGB conversion, downscaling and content-addressed storage.

What happens to each source image (:func:`store_image`):

1. It is read (a path or raw bytes) or taken as given (a PIL image, e.g. synthetic data)
   and fully decoded, so truncated or corrupt files are caught here and not in training.
   Only the raster formats in :data:`SOURCE_FORMATS` are decoded: Pillow's other plugins
   (EPS, which runs Ghostscript; FITS, GRIB, WMF ...) are refused with reason
   ``unsupported_image``. Any error Pillow raises on malformed bytes is a ``corrupt_image``
   rejection, never a crash. Only regular files up to :data:`MAX_IMAGE_BYTES` are read,
   so a source naming ``/dev/zero`` or a FIFO cannot hang prep or exhaust its memory.
2. Decompression bombs are rejected: an image whose header announces more than
   ``PIL.Image.MAX_IMAGE_PIXELS`` pixels is refused before its pixels are decoded.
3. It is converted to 8-bit RGB: CMYK, paletted, grayscale, 16/32-bit integer and float
   images are mapped to RGB; **alpha is composited onto white** (transparent regions
   become white, as most viewers show them), never silently dropped.
4. If ``max_pixels`` is set and ``width * height`` exceeds it, it is downscaled
   (Lanczos, aspect ratio kept) to the largest size within the cap.
5. It is stored once as ``images/<sha256>.<ext>``. An RGB JPEG or PNG that needs no
   conversion or resize is stored byte-for-byte (no re-encoding loss); anything else is
   re-encoded, as JPEG when the source was JPEG and PNG otherwise.

EXIF orientation is not applied: boxes in VLM-R1/RefCOCO data refer to the raw pixel
grid, which is also what the processor sees.
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, UnidentifiedImageError

from data_prep.packed import IMAGES_DIR, PrepError

#: What a source may hand over as an image: a file path, the file's bytes, or a PIL image.
ImageInput = Union[Path, bytes, Image.Image]

#: Pillow formats prep decodes. Datasets ship photographs and renderings in these; the
#: other plugins are either not raster images or call out to external programs.
SOURCE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM", "JPEG2000")

#: Largest image file read, in bytes: above any image within Pillow's pixel limit
#: (89.5M pixels x 4 channels x 2 bytes, uncompressed), far below a machine's memory.
MAX_IMAGE_BYTES = 1 << 30

_KEEP_AS_IS = {"JPEG": "jpg", "PNG": "png"}
_ALPHA_MODES = {"RGBA", "LA", "PA", "RGBa", "La"}
_WHITE = (255, 255, 255)


@dataclass(frozen=True)
class StoredImage:
    """An image written to the dataset: its relative name, stored and original sizes."""

    name: str
    sha256: str
    size: tuple[int, int]
    original_size: tuple[int, int]
    num_bytes: int


def describe(source: ImageInput) -> str:
    """A short human label for an image input, for error messages."""
    if isinstance(source, Path):
        return str(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes>"
    return "<in-memory image>"


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB, compositing alpha (or a transparency key) on white."""
    if image.mode == "RGB" and "transparency" not in image.info:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        # 16/32-bit grayscale: map the 16-bit range to 8 bits (values are clipped).
        scale = 257.0 if image.mode.startswith("I") else 1.0
        array = np.asarray(image, dtype=np.float64) / scale
        gray = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")
        return gray.convert("RGB")
    if image.mode == "P" or "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def fit_max_pixels(width: int, height: int, max_pixels: int | None) -> tuple[int, int]:
    """Largest size with the same aspect ratio and ``w * h <= max_pixels`` (unchanged if it fits)."""
    if max_pixels is None or width * height <= max_pixels:
        return width, height
    scale = math.sqrt(max_pixels / (width * height))
    new_w, new_h = max(1, math.floor(width * scale)), max(1, math.floor(height * scale))
    while new_w * new_h > max_pixels:  # floating point guard
        if new_w >= new_h and new_w > 1:
            new_w -= 1
        else:
            new_h -= 1
    return new_w, new_h


def _bomb(label: str, pixels: str) -> PrepError:
    return PrepError(
        f"image {label} has {pixels}, over Pillow's decompression-bomb limit "
        f"(PIL.Image.MAX_IMAGE_PIXELS = {Image.MAX_IMAGE_PIXELS}); it is rejected. "
        "If the image is genuine, raise PIL.Image.MAX_IMAGE_PIXELS in your own script",
        reason="decompression_bomb",
    )


def _read(source: Path) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_IMAGE_BYTES`.

    A source may name anything (``/dev/zero``, a FIFO, a 50 GB disk image): the file is
    opened without blocking and checked with ``fstat`` on the open descriptor before a
    byte is read, so such a name is a clean rejection, not a hang or an exhausted memory.
    """
    label = describe(source)
    try:
        fd = os.open(source, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise PrepError(f"image {label} not found", reason="missing_image") from None
    except OSError as exc:
        raise PrepError(f"image {label} cannot be read ({exc.strerror or exc})", reason="missing_image") from None
    except ValueError as exc:  # a NUL byte or a lone surrogate in the name
        raise PrepError(f"image path {str(source)!r} is not a valid file name ({exc})", reason="missing_image") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PrepError(f"image {label} is not a regular file", reason="missing_image")
        if info.st_size > MAX_IMAGE_BYTES:
            raise PrepError(
                f"image {label} is {info.st_size} bytes, over the {MAX_IMAGE_BYTES} bytes prep reads "
                "(data_prep.images.MAX_IMAGE_BYTES)",
                reason="decompression_bomb",
            )
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > MAX_IMAGE_BYTES:  # the file grew while being read
                raise PrepError(f"image {label} grew past {MAX_IMAGE_BYTES} bytes while read", reason="decompression_bomb")
        return b"".join(chunks)
    except OSError as exc:
        raise PrepError(f"image {label} cannot be read ({exc.strerror or exc})", reason="missing_image") from None
    finally:
        os.close(fd)


def _unsupported(data: bytes) -> str | None:
    """The Pillow format name of bytes that only a plugin outside SOURCE_FORMATS recognises.

    Only the header is parsed (no pixel data is decoded, no external program runs).
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.format
    except Exception:  # noqa: BLE001 - not an image at all: the caller says so
        return None


def decode(source: ImageInput) -> tuple[Image.Image, bytes | None]:
    """Fully decode an image input; return it with the original file bytes (None for PIL input).

    Raises :class:`PrepError` with reason ``missing_image``, ``corrupt_image``,
    ``unsupported_image`` or ``decompression_bomb``. The message names the image but not
    the record: callers add that.
    """
    if isinstance(source, Image.Image):
        source.load()
        return source, None
    label = describe(source)
    data = _read(source) if isinstance(source, Path) else bytes(source)
    try:
        image = Image.open(io.BytesIO(data), formats=SOURCE_FORMATS)
        limit = Image.MAX_IMAGE_PIXELS
        if limit and image.size[0] * image.size[1] > limit:
            raise _bomb(label, f"{image.size[0]}x{image.size[1]} pixels")
        image.load()
    except PrepError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise _bomb(label, f"{found.group(1)} pixels" if found else "too many pixels") from None
    except UnidentifiedImageError:
        other = _unsupported(data)
        if other:
            raise PrepError(
                f"image {label} is in {other} format, which prep does not decode (it reads "
                f"{', '.join(SOURCE_FORMATS)}); convert it to PNG or JPEG",
                reason="unsupported_image",
            ) from None
        what = "is empty (0 bytes)" if not data else "is not a readable image file"
        raise PrepError(f"image {label} {what}", reason="corrupt_image") from None
    except MemoryError:
        raise PrepError(f"image {label} needs more memory than is available to decode", reason="corrupt_image") from None
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types on malformed bytes
        raise PrepError(
            f"image {label} is corrupt or truncated ({type(exc).__name__}: {exc})", reason="corrupt_image"
        ) from None
    return image, data


def _write_once(path: Path, data: bytes) -> None:
    """Create ``path`` with ``data`` unless it exists (same name = same content).

    Safe with concurrent writers of the same image: the loser of ``O_EXCL`` skips. A
    half-written file can only exist inside the pack's temp dir, which is deleted on error.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def store_image(
    source: ImageInput,
    images_dir: Path,
    *,
    max_pixels: int | None = None,
    jpeg_quality: int = 95,
    png_compress_level: int = 6,
) -> StoredImage:
    """Validate, convert, maybe downscale, and store one image under ``images_dir``.

    Returns where it went and its sizes; raises :class:`PrepError` (see :func:`decode`).
    The stored name is the sha256 of the stored bytes, so identical images are stored once.
    """
    image, data = decode(source)
    original_size = image.size
    source_format = image.format
    frames = getattr(image, "n_frames", 1)
    try:
        rgb = to_rgb(image)
    except Exception as exc:  # noqa: BLE001 - an exotic mode Pillow cannot convert
        raise PrepError(
            f"image {describe(source)} ({image.mode}) cannot be converted to RGB ({type(exc).__name__}: {exc})",
            reason="corrupt_image",
        ) from None
    target = fit_max_pixels(*original_size, max_pixels)
    if target != original_size:
        rgb = rgb.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)
    keep = data is not None and rgb is image and target == original_size and frames == 1
    if keep and source_format in _KEEP_AS_IS:
        payload, ext = data, _KEEP_AS_IS[source_format]
    else:
        buffer = io.BytesIO()
        if source_format == "JPEG":
            rgb.save(buffer, format="JPEG", quality=jpeg_quality)
            ext = "jpg"
        else:
            rgb.save(buffer, format="PNG", compress_level=png_compress_level)
            ext = "png"
        payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    name = f"{digest}.{ext}"
    _write_once(images_dir / name, payload)
    return StoredImage(
        name=f"{IMAGES_DIR}/{name}",
        sha256=digest,
        size=tuple(rgb.size),
        original_size=tuple(original_size),
        num_bytes=len(payload),
    )
