"""Decode one source entry into a square uint8 image [C, R, R] at the target resolution.

The handling of every odd input lives here (docs/datasets.md lists it): modes are normalised to 8-bit
L or RGB, EXIF rotation is applied, alpha is composited on black, 16-bit samples keep their high byte,
non-square images are an error unless center-cropped, images smaller than R are an error, larger ones
are resized down with Lanczos after the crop.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fastprogan.data.errors import DatasetError

TRANSFORMS = ("none", "center-crop")


def _open(name: str, payload: bytes | np.ndarray) -> Image.Image:
    if isinstance(payload, np.ndarray):
        return Image.fromarray(payload)  # [H, W] -> L, [H, W, 3] -> RGB, [H, W, 4] -> RGBA
    try:
        with warnings.catch_warnings():
            # A decompression-bomb warning or a bad EXIF block must not print once per image.
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(payload))
            img.load()  # decodes now: truncated or corrupt data raises here, not later
            img = ImageOps.exif_transpose(img)  # EXIF orientation (e.g. tag 6 = rotate 90 CW)
    except UnidentifiedImageError:
        raise DatasetError(f"{name}: not an image file (Pillow cannot identify it)") from None
    except Exception as exc:  # Pillow raises many types on bad data (OSError, SyntaxError, struct.error...)
        raise DatasetError(f"{name}: corrupt or truncated image ({exc})") from None
    return img


def _composite_on_black(rgba: np.ndarray) -> np.ndarray:
    """[H, W, 4] uint8 -> [H, W, 3]: colour * alpha / 255, rounded (i.e. alpha-blended onto black)."""
    rgb = rgba[..., :3].astype(np.uint32)
    a = rgba[..., 3:].astype(np.uint32)
    return ((rgb * a + 127) // 255).astype(np.uint8)


def _to_8bit(name: str, img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 'L' or 'RGB'."""
    mode = img.mode
    if mode in ("L", "RGB"):
        return img
    if mode.startswith("I;16") or mode == "I":
        # 16-bit samples: keep the high byte (v >> 8), which maps 0..65535 onto 0..255 evenly;
        # clipping to 255 would saturate almost every pixel. Pillow < 10 opens 16-bit PNGs as 'I'.
        arr = np.asarray(img)
        if arr.min() < 0 or arr.max() > 65535:
            raise DatasetError(f"{name}: {mode} image with values outside 0..65535 is not supported")
        return Image.fromarray((arr.astype(np.uint32) >> 8).astype(np.uint8), mode="L")
    if mode == "1":
        return img.convert("L")
    if mode == "P":
        # A palette may carry transparency; resolve it through RGBA so it composites like RGBA.
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
        if mode == "RGB":
            return img
    if mode in ("RGBA", "LA", "La", "PA", "RGBa"):
        rgba = np.asarray(img.convert("RGBA"))  # [H, W, 4]
        return Image.fromarray(_composite_on_black(rgba), mode="RGB")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return img.convert("RGB")
    raise DatasetError(f"{name}: unsupported image mode {mode!r}")


def decode_image(
    name: str, payload: bytes | np.ndarray, resolution: int, channels: int, transform: str = "none"
) -> np.ndarray:
    """One entry -> uint8 [channels, resolution, resolution]; DatasetError names ``name`` on failure."""
    img = _to_8bit(name, _open(name, payload))
    if channels == 1 and img.mode != "L":
        img = img.convert("L")  # ITU-R 601 luma, Pillow's own conversion
    elif channels == 3 and img.mode != "RGB":
        img = img.convert("RGB")  # grayscale replicated into the three channels
    w, h = img.size
    if w != h:
        if transform != "center-crop":
            raise DatasetError(f"{name}: image is not square ({w}x{h}); use --transform center-crop")
        side = min(w, h)
        left, top = (w - side) // 2, (h - side) // 2
        img = img.crop((left, top, left + side, top + side))
    side = img.size[0]
    if side < resolution:
        raise DatasetError(f"{name}: image is {side}x{side}, smaller than the resolution {resolution}")
    if side > resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    arr = np.asarray(img)  # [R, R] or [R, R, 3]
    if arr.ndim == 2:
        arr = arr[None]  # [1, R, R]
    else:
        arr = arr.transpose(2, 0, 1)  # [3, R, R]
    return np.ascontiguousarray(arr, dtype=np.uint8)


def decode_task(args: tuple[str, bytes | np.ndarray, int, int, str]) -> tuple[bool, np.ndarray | str]:
    """Process-pool entry point: (name, payload, R, C, transform) -> (True, image) or (False, message).

    A bad image comes back as a message rather than an exception so the parent decides (skip or
    fail) in source order, whatever the number of workers.
    """
    try:
        return True, decode_image(*args)
    except DatasetError as exc:
        return False, str(exc)
