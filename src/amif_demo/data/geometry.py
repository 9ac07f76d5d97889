"""Framing: which square region of a source image becomes the output image, and how to resample it.

A :class:`Frame` maps native pixel coordinates to output pixel coordinates. The output is always a
square of ``size`` pixels with isotropic pixels (``mm_per_px`` millimetres each when the source has a
pixel spacing); the region may extend past the source image, which is padded with zeros (air).
Coordinates are pixel *indices* (the centre of pixel ``k`` is at ``k``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Frame:
    """Native pixel-edge coordinates of the output's top-left corner and native pixels per output pixel."""

    r0: float
    c0: float
    step_r: float
    step_c: float
    size: int
    mm_per_px: float | None

    def to_out(self, row: float, col: float) -> tuple[float, float]:
        """Output pixel coordinates of a native pixel position."""
        return (row + 0.5 - self.r0) / self.step_r - 0.5, (col + 0.5 - self.c0) / self.step_c - 0.5

    def to_native(self, row: float, col: float) -> tuple[float, float]:
        """Native pixel coordinates of an output pixel position."""
        return (row + 0.5) * self.step_r + self.r0 - 0.5, (col + 0.5) * self.step_c + self.c0 - 0.5

    def as_dict(self) -> dict:
        return asdict(self)


def square_frame(
    box: tuple[float, float, float, float],
    spacing_rc: tuple[float, float],
    size: int,
    *,
    margin: float = 0.06,
    zoom: float = 1.0,
    shift: tuple[float, float] = (0.0, 0.0),
    has_mm: bool = True,
) -> Frame:
    """The square frame around ``box`` = (r0, c0, r1, c1) (native pixels) with a relative margin.

    ``spacing_rc`` is the native (row, col) pixel size in mm (or (1, 1) when unknown). ``zoom`` > 1
    crops in, ``shift`` moves the centre by a fraction of the side (used to jitter 2D studies).
    """
    r0, c0, r1, c1 = box
    sr, sc = spacing_rc
    h_mm, w_mm = (r1 - r0) * sr, (c1 - c0) * sc
    side_mm = max(h_mm, w_mm) * (1.0 + 2.0 * margin) / zoom
    cr = (r0 + r1) / 2.0 + shift[0] * side_mm / sr
    cc = (c0 + c1) / 2.0 + shift[1] * side_mm / sc
    step_r, step_c = side_mm / size / sr, side_mm / size / sc
    return Frame(
        r0=cr - side_mm / sr / 2.0, c0=cc - side_mm / sc / 2.0, step_r=step_r, step_c=step_c, size=size,
        mm_per_px=(side_mm / size) if has_mm else None,
    )


def resample(arr: np.ndarray, frame: Frame) -> np.ndarray:
    """The output image of ``frame`` cut from ``arr`` (H, W) or (H, W, C), bilinear with antialiasing."""
    if arr.ndim == 3:
        return np.stack([resample(arr[..., k], frame) for k in range(arr.shape[2])], axis=-1)
    h, w = arr.shape
    x0, y0 = frame.c0, frame.r0
    x1, y1 = x0 + frame.step_c * frame.size, y0 + frame.step_r * frame.size
    pad_l = max(0, int(np.ceil(-x0)) + 1)
    pad_t = max(0, int(np.ceil(-y0)) + 1)
    pad_r = max(0, int(np.ceil(x1 - w)) + 1)
    pad_b = max(0, int(np.ceil(y1 - h)) + 1)
    a = arr.astype(np.float32, copy=False)
    if pad_l or pad_t or pad_r or pad_b:
        a = np.pad(a, ((pad_t, pad_b), (pad_l, pad_r)))
    im = Image.fromarray(np.ascontiguousarray(a))
    out = im.resize(
        (frame.size, frame.size), Image.Resampling.BILINEAR,
        box=(x0 + pad_l, y0 + pad_t, x1 + pad_l, y1 + pad_t),
    )
    return np.asarray(out, dtype=np.float32)


def resample_mask(mask: np.ndarray, frame: Frame) -> np.ndarray:
    """``mask`` resampled like an image and thresholded at one half."""
    return resample(mask.astype(np.float32), frame) > 0.5
