"""Image loading: PNG / JPEG / any Pillow format, and DICOM with modality LUT and windowing.

Every loader returns an 8-bit RGB :class:`PIL.Image.Image`, whatever the source, so the transforms see
one format. Failures (missing file, corrupt or truncated file, pixel data no installed decoder can
read) raise :class:`amif.errors.DataError` naming the file.

Greyscale DICOM is mapped to 8 bits in this order:

1. the Modality LUT (RescaleSlope / RescaleIntercept, or a Modality LUT Sequence), so CT values are
   Hounsfield units;
2. a window ``(center, width)``: the ``window`` argument if given, else the header's
   WindowCenter / WindowWidth (the first value when there are several), else a soft-tissue window
   (40 / 400 HU) for CT, else a robust min-max (0.5 and 99.5 percentiles);
3. MONOCHROME1 images are inverted so that higher values are brighter, as for MONOCHROME2.

Multi-frame DICOM gives its middle frame. Colour DICOM (RGB, YBR_*, PALETTE COLOR) is converted
to RGB. High-bit-depth raster images (16-bit PNG, 32-bit integer or float TIFF) are min-max scaled,
or windowed when ``window`` is given; 8-bit raster images are returned as they are (``window`` is
ignored for them). JPEG EXIF orientation is applied so the image is oriented as a viewer shows it
(this matters for left/right questions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from amif.errors import DataError

__all__ = ["load_image", "is_dicom", "DICOM_SUFFIXES", "CT_DEFAULT_WINDOW"]

DICOM_SUFFIXES = (".dcm", ".dicom")
CT_DEFAULT_WINDOW = (40.0, 400.0)  # soft-tissue window (center, width) in HU
_ROBUST_PERCENTILES = (0.5, 99.5)


def _has_dicm_magic(path: Path) -> bool:
    """True when the file has the DICOM Part 10 preamble: ``DICM`` at byte offset 128."""
    try:
        with path.open("rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def is_dicom(path: str | Path) -> bool:
    """Whether ``path`` is a DICOM file: by its ``.dcm`` / ``.dicom`` suffix or the ``DICM`` magic.

    A file without a suffix and without the Part 10 preamble gives False here; :func:`load_image`
    still tries such a file as DICOM when Pillow does not recognise it.
    """
    path = Path(path)
    if path.suffix.lower() in DICOM_SUFFIXES:
        return True
    return path.is_file() and _has_dicm_magic(path)


def load_image(path: str | Path, *, window: tuple[float, float] | None = None) -> Image.Image:
    """Load an image file as an 8-bit RGB PIL image.

    ``window`` = ``(center, width)`` applies to greyscale DICOM (in Modality-LUT units, e.g. HU for
    CT) and to high-bit-depth greyscale raster images; it overrides the DICOM header's window.
    Raises :class:`DataError` (naming the file) when the file is missing or cannot be decoded.
    """
    path = Path(path)
    if window is not None:
        window = _check_window(window)
    if not path.exists():
        raise DataError("image file not found", path=path)
    if not path.is_file():
        raise DataError("image path is not a regular file", path=path)
    if path.suffix.lower() in DICOM_SUFFIXES or _has_dicm_magic(path):
        return _load_dicom(path, window)
    if path.suffix == "":
        # No suffix and no DICM preamble: a raster image Pillow recognises by content, or else a
        # DICOM data set without the Part 10 preamble.
        try:
            return _load_raster(path, window)
        except _NotRaster:
            return _load_dicom(path, window, force=True)
    try:
        return _load_raster(path, window)
    except _NotRaster as e:
        raise DataError(f"not a readable image ({e})", path=path) from e


# ----------------------------------------------------------------------------------------------
# raster images (Pillow)


class _NotRaster(Exception):
    """Pillow does not recognise the file format."""


def _load_raster(path: Path, window: tuple[float, float] | None) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()  # decode now, so truncated / corrupt files fail here
            im = ImageOps.exif_transpose(im)
            return _pil_to_rgb(im, window)
    except UnidentifiedImageError as e:
        raise _NotRaster("unrecognised image format") from e
    except Image.DecompressionBombError as e:
        raise DataError(f"image too large to decode safely ({e})", path=path) from e
    except (OSError, ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise DataError(f"cannot decode image ({type(e).__name__}: {e})", path=path) from e


def _pil_to_rgb(im: Image.Image, window: tuple[float, float] | None) -> Image.Image:
    mode = im.mode
    if mode == "RGB":
        return im.copy()
    if mode.startswith("I") or mode == "F":  # I, I;16, I;16B, I;16L, I;16N, F: high bit depth grey
        arr = np.asarray(im).astype(np.float64)
        return _grey_to_rgb(_to_uint8(arr, window))
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        # composite transparent areas over black (radiology background)
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return im.convert("RGB")


# ----------------------------------------------------------------------------------------------
# DICOM (pydicom)


def _load_dicom(path: Path, window: tuple[float, float] | None, *, force: bool = False) -> Image.Image:
    try:
        import pydicom
    except ImportError as e:  # pragma: no cover - pydicom is a dependency
        raise DataError("reading DICOM needs the 'pydicom' package", path=path) from e
    # a .dcm file without the Part 10 preamble may still be a bare DICOM data set
    force = force or not _has_dicm_magic(path)
    try:
        ds = pydicom.dcmread(str(path), force=force)
    except Exception as e:  # pydicom raises many types (InvalidDicomError, EOFError, ValueError, ...)
        raise DataError(f"cannot read DICOM file ({type(e).__name__}: {e})", path=path) from e
    if not any(tag in ds for tag in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DataError("DICOM file has no pixel data", path=path)
    try:
        n_frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        n_frames = 1
    frame = n_frames // 2 if n_frames > 1 else 0
    try:
        _fill_transfer_syntax(ds)
        arr = _dicom_frame(ds, frame, n_frames)
    except Exception as e:  # missing decoder, truncated pixel data, inconsistent header, ...
        raise DataError(f"cannot decode DICOM pixel data ({type(e).__name__}: {e})", path=path) from e
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip().upper()
    try:
        if arr.ndim == 3 and arr.shape[-1] in (3, 4):
            return _dicom_colour(ds, arr, photometric)
        if arr.ndim != 2:
            raise DataError(f"unsupported DICOM pixel array shape {tuple(arr.shape)}", path=path)
        if photometric == "PALETTE COLOR":
            return _dicom_palette(ds, arr)
        return _dicom_grey(ds, arr, frame, photometric, window)
    except DataError as e:
        if e.path is None:
            raise DataError(str(e), path=path) from e
        raise
    except Exception as e:
        raise DataError(f"cannot convert DICOM pixel data ({type(e).__name__}: {e})", path=path) from e


def _fill_transfer_syntax(ds: Any) -> None:
    """Give a data set read without a file meta header the transfer syntax it was read with."""
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is not None and "TransferSyntaxUID" in meta:
        return
    from pydicom.dataset import FileMetaDataset

    if meta is None:
        ds.file_meta = meta = FileMetaDataset()
    implicit, little = getattr(ds, "original_encoding", (None, None))
    if implicit is None:
        implicit = getattr(ds, "is_implicit_VR", True)
        little = getattr(ds, "is_little_endian", True)
    if implicit:
        meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian if little else ExplicitVRBigEndian


def _dicom_frame(ds: Any, frame: int, n_frames: int) -> np.ndarray:
    """Decoded pixel array of one frame ((rows, cols) or (rows, cols, samples)).

    With pydicom >= 3 only that frame is decoded and colour data is returned as RGB (YBR_FULL,
    YBR_FULL_422 and the JPEG 2000 colour transforms are converted by pydicom).
    """
    try:
        from pydicom.pixels import pixel_array as _pixel_array  # pydicom >= 3
    except ImportError:  # pragma: no cover - pydicom 2.x
        _pixel_array = None
    if _pixel_array is not None:
        return np.asarray(_pixel_array(ds, index=frame if n_frames > 1 else None))
    # pydicom 2.x: decodes all frames and returns uncompressed YBR data unconverted
    arr = np.asarray(ds.pixel_array)  # pragma: no cover
    if n_frames > 1:  # pragma: no cover
        arr = arr[frame]
    photometric = str(ds.get("PhotometricInterpretation", "")).upper()
    compressed = ds.file_meta.TransferSyntaxUID.is_compressed
    if photometric in ("YBR_FULL", "YBR_FULL_422") and not compressed:  # pragma: no cover
        from pydicom.pixel_data_handlers.util import convert_color_space

        arr = convert_color_space(arr, photometric, "RGB")
    return arr


def _dicom_colour(ds: Any, arr: np.ndarray, photometric: str) -> Image.Image:
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        bits = int(ds.get("BitsStored", 8) or 8)
        if np.issubdtype(arr.dtype, np.integer) and 8 < bits <= 32:
            arr = (arr.astype(np.float64) * (255.0 / float(2**bits - 1))).round()
            arr = np.clip(arr, 0, 255).astype(np.uint8)
        else:
            arr = _to_uint8(arr.astype(np.float64), None)
    return Image.fromarray(np.ascontiguousarray(arr))


def _dicom_palette(ds: Any, arr: np.ndarray) -> Image.Image:
    try:
        from pydicom.pixels import apply_color_lut
    except ImportError:  # pragma: no cover - pydicom 2.x
        from pydicom.pixel_data_handlers.util import apply_color_lut
    rgb = np.asarray(apply_color_lut(arr, ds))
    desc = ds.get("RedPaletteColorLookupTableDescriptor")
    lut_bits = int(desc[2]) if desc is not None and len(desc) >= 3 else 16
    if lut_bits > 8:
        rgb = np.round(rgb.astype(np.float64) * (255.0 / float(2**lut_bits - 1)))
    return Image.fromarray(np.ascontiguousarray(np.clip(rgb, 0, 255).astype(np.uint8)))


def _functional_group_item(ds: Any, frame: int, sequence: str) -> Any:
    """First item of ``sequence`` in the per-frame (then shared) functional groups, or None."""
    for group, idx in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = ds.get(group)
        if groups is None or len(groups) <= idx:
            continue
        seq = groups[idx].get(sequence)
        if seq is not None and len(seq) > 0:
            return seq[0]
    return None


def _modality_lut(ds: Any, arr: np.ndarray, frame: int) -> np.ndarray:
    if "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds:
        try:
            from pydicom.pixels import apply_modality_lut
        except ImportError:  # pragma: no cover - pydicom 2.x
            from pydicom.pixel_data_handlers.util import apply_modality_lut
        return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)
    item = _functional_group_item(ds, frame, "PixelValueTransformationSequence")  # enhanced multi-frame
    out = arr.astype(np.float64)
    if item is not None:
        slope = float(item.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(item.get("RescaleIntercept", 0.0) or 0.0)
        out = out * slope + intercept
    return out


def _first_value(value: Any) -> float | None:
    if value is None:
        return None
    try:
        if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
            value = value[0] if len(value) else None
        return None if value is None else float(value)
    except (TypeError, ValueError, IndexError):
        return None


def _header_window(ds: Any, frame: int) -> tuple[float, float] | None:
    center, width = _first_value(ds.get("WindowCenter")), _first_value(ds.get("WindowWidth"))
    if center is None or width is None:
        item = _functional_group_item(ds, frame, "FrameVOILUTSequence")
        if item is not None:
            center, width = _first_value(item.get("WindowCenter")), _first_value(item.get("WindowWidth"))
    if center is None or width is None or not np.isfinite(center) or not np.isfinite(width) or width <= 0:
        return None
    return center, width


def _dicom_grey(
    ds: Any, arr: np.ndarray, frame: int, photometric: str, window: tuple[float, float] | None
) -> Image.Image:
    values = _modality_lut(ds, arr, frame)
    if window is None:
        window = _header_window(ds, frame)
    if window is None and str(ds.get("Modality", "")).upper() == "CT":
        window = CT_DEFAULT_WINDOW
    out = _to_uint8(values, window)
    if photometric == "MONOCHROME1":
        out = 255 - out
    return _grey_to_rgb(out)


# ----------------------------------------------------------------------------------------------
# shared helpers


def _check_window(window: Any) -> tuple[float, float]:
    try:
        center, width = (float(v) for v in window)
    except (TypeError, ValueError) as e:
        raise ValueError(f"window must be (center, width), got {window!r}") from e
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0:
        raise ValueError(f"window width must be a positive finite number, got {window!r}")
    return center, width


def _to_uint8(values: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    """Map values to 0..255: linear ``window`` (center, width), or a robust min-max without one."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    if not finite.all():
        values = np.where(finite, values, np.nan)
    if window is not None:
        center, width = window
        lo, hi = center - width / 2.0, center + width / 2.0
    else:
        data = values[finite] if not finite.all() else values.ravel()
        if data.size == 0:
            return np.zeros(values.shape, dtype=np.uint8)
        lo, hi = (float(v) for v in np.percentile(data, _ROBUST_PERCENTILES))
        if hi <= lo:  # e.g. a mostly constant image: fall back to the plain range
            lo, hi = float(data.min()), float(data.max())
        if hi <= lo:
            return np.zeros(values.shape, dtype=np.uint8)
    scaled = (values - lo) * (255.0 / (hi - lo))
    scaled = np.nan_to_num(scaled, nan=0.0)
    return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def _grey_to_rgb(grey: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(grey)).convert("RGB")
