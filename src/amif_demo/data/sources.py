"""Real images shipped in pip packages (and one opt-in Debian package), with body/organ masks.

Every source is turned into float images in [0, 1] (CT windowed, other modalities scaled so that the
99.5th percentile of the tissue lands near 0.8, which leaves head-room for bright lesions) plus a
boolean mask of the body or organ in which synthetic lesions may be placed. Volumes keep their 3D
arrays so that a study's two views cut the same 3D lesions.

Display conventions (see ``docs/demo-dataset.md``): axial and coronal images are shown in the
radiological convention (the patient's left on the image right, anterior / superior at the top),
sagittal images with anterior on the image left and superior at the top.
"""

from __future__ import annotations

import importlib.util
import tarfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

PLANES = ("axial", "coronal", "sagittal")

# Where the Debian package "invesalius-examples" puts its example study (first match is used).
INVESALIUS_CANDIDATES = (
    "/usr/share/doc/invesalius-examples/examples/Cranium.inv3",
    "/usr/share/invesalius-examples/Cranium.inv3",
    "/usr/share/invesalius-examples/examples/Cranium.inv3",
)


@dataclass(frozen=True)
class SourceInfo:
    """What a source is and which questions it supports.

    ``horizontal`` / ``vertical`` say what the image axes mean for position questions:
    ``"lr"`` (patient's left / right, radiological convention), ``"ap"`` (anterior / posterior),
    ``"ud"`` (upper / lower), or ``None`` when the axis has no anatomical meaning.
    """

    key: str
    title: str
    modality: str  # answer string, e.g. "ct"
    organ: str  # answer string, e.g. "brain"
    plane: str | None  # "axial" / "coronal" / "sagittal" for cross-sections, else None (no plane question)
    view_desc: str  # for captions, e.g. "axial", "frontal", "oblique"
    package: str
    licence: str
    origin: str
    lesions: bool = True  # False: used for recognition questions only (the image has a real finding)
    horizontal: str | None = None
    vertical: str | None = None
    colour: bool = False
    note: str = ""


@dataclass
class Image2D:
    """One 2D source image: float [0,1] array (H, W) or (H, W, 3), mask, spacing in mm (or None)."""

    info: SourceInfo
    image: np.ndarray
    mask: np.ndarray
    spacing: float | None  # mm per pixel (isotropic) or None when the file has no usable spacing
    crop: tuple[float, float, float, float]  # (r0, c0, r1, c1): the region framed by the views


@dataclass
class PlaneGeometry:
    """How to cut a volume in one plane: axis roles and display flips."""

    through: int
    row_axis: int
    row_flip: bool
    col_axis: int
    col_flip: bool


@dataclass
class Volume:
    """A 3D source: float [0,1] array, organ mask, voxel spacing (mm) and per-plane geometry."""

    key: str
    infos: dict[str, SourceInfo]  # per plane
    data: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    planes: dict[str, PlaneGeometry]
    _cache: dict = field(default_factory=dict, repr=False)

    def n_slices(self, plane: str) -> int:
        return self.data.shape[self.planes[plane].through]

    def _cut(self, arr: np.ndarray, plane: str, index: int) -> np.ndarray:
        g = self.planes[plane]
        s = arr[(slice(None),) * g.through + (int(index),)]  # a view, no copy of the volume
        # remaining axes keep their order; find where row/col axes went
        rest = [a for a in range(3) if a != g.through]
        s = s if rest.index(g.row_axis) == 0 else s.T
        if g.row_flip:
            s = s[::-1]
        if g.col_flip:
            s = s[:, ::-1]
        return np.ascontiguousarray(s)

    def slice(self, plane: str, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The displayed slice ``index`` of ``plane`` and its mask (rows, cols in display order)."""
        key = (plane, index)
        if key not in self._cache:
            self._cache[key] = (self._cut(self.data, plane, index), self._cut(self.mask, plane, index))
        return self._cache[key]

    def slice_spacing(self, plane: str) -> tuple[float, float, float]:
        """(row, col, through) spacing in mm of the slices of ``plane``."""
        g = self.planes[plane]
        return self.spacing[g.row_axis], self.spacing[g.col_axis], self.spacing[g.through]

    def display_to_voxel(self, plane: str, index: float, row: float, col: float) -> tuple[float, float, float]:
        """Voxel coordinates of a point given as (slice index, display row, display col)."""
        g = self.planes[plane]
        shape = self.data.shape
        v = [0.0, 0.0, 0.0]
        v[g.through] = float(index)
        v[g.row_axis] = (shape[g.row_axis] - 1 - row) if g.row_flip else row
        v[g.col_axis] = (shape[g.col_axis] - 1 - col) if g.col_flip else col
        return v[0], v[1], v[2]


# --------------------------------------------------------------------------------------------- helpers


def _largest_component(mask: np.ndarray) -> np.ndarray:
    lab, n = ndi.label(mask)
    if n == 0:
        return mask
    sizes = ndi.sum(mask, lab, index=np.arange(1, n + 1))
    return lab == (int(np.argmax(sizes)) + 1)


def _fill_holes_2d_stack(mask: np.ndarray, axis: int) -> np.ndarray:
    out = np.empty_like(mask)
    for i in range(mask.shape[axis]):
        sl = [slice(None)] * 3
        sl[axis] = i
        out[tuple(sl)] = ndi.binary_fill_holes(mask[tuple(sl)])
    return out


def _drop_small_parts(mask: np.ndarray, axis: int, frac: float = 0.3) -> np.ndarray:
    """Per slice along ``axis``, drop connected parts smaller than ``frac`` of the slice's largest one
    (e.g. the orbits next to the brain in low axial slices)."""
    out = np.zeros_like(mask)
    for i in range(mask.shape[axis]):
        sl = [slice(None)] * 3
        sl[axis] = i
        m = mask[tuple(sl)]
        lab, n = ndi.label(m)
        if n == 0:
            continue
        sizes = ndi.sum(m, lab, index=np.arange(1, n + 1))
        keep = np.flatnonzero(sizes >= frac * sizes.max()) + 1
        out[tuple(sl)] = np.isin(lab, keep)
    return out


def _scale_with_headroom(a: np.ndarray, mask: np.ndarray, top: float = 0.8, low_pct: float = 0.5) -> np.ndarray:
    """Map the tissue's low percentile to 0 and its 99.5th percentile to ``top``."""
    vals = a[mask] if mask.any() else a.ravel()
    lo = float(np.percentile(vals, low_pct)) if low_pct > 0 else 0.0
    hi = float(np.percentile(vals, 99.5))
    out = (a.astype(np.float32) - lo) / max(hi - lo, 1e-6) * top
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _window(hu: np.ndarray, center: float, width: float) -> np.ndarray:
    return np.clip((hu.astype(np.float32) - (center - width / 2)) / width, 0.0, 1.0).astype(np.float32)


def _bbox(mask: np.ndarray) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return 0, 0, mask.shape[0], mask.shape[1]
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def _dicom(name: str):
    """Read a pydicom / pydicom-data test file; None when it is not available or cannot be decoded."""
    try:
        import pydicom
        from pydicom.data import get_testdata_file

        path = get_testdata_file(name)
        if path is None:
            return None
        ds = pydicom.dcmread(path)
        _ = ds.pixel_array
        return ds
    except Exception:  # missing package, file, or pixel decoder: the source is simply not used
        return None


def _hu(ds) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut

    return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float32)


def _spacing(ds) -> float | None:
    for key in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(key)
        if v is not None and len(v) >= 2 and float(v[0]) > 0 and abs(float(v[0]) - float(v[1])) < 1e-3:
            return float(v[0])
    return None


# --------------------------------------------------------------------------------------------- 2D sources

_PYDICOM = ("pydicom / pydicom-data", "MIT (the test files are NEMA / public DICOM samples)")


def _ct_head_693() -> Image2D | None:
    ds = _dicom("693_UNCI.dcm")
    if ds is None:
        return None
    hu = _hu(ds)
    hu_s = ndi.gaussian_filter(hu, 2.0)
    bone = hu_s > 250
    head = _largest_component(ndi.binary_fill_holes(_largest_component(hu_s > -300)))
    # intracranial soft tissue: enclosed by the skull, not bone itself
    inner = ndi.binary_fill_holes(_largest_component(bone)) & ~ndi.binary_dilation(bone, iterations=4) & head
    inner = _largest_component(ndi.binary_opening(inner, iterations=3))
    img = _window(hu, 40, 240)
    info = SourceInfo(
        key="ct_head", title="Head CT (693_UNCI.dcm)", modality="ct", organ="brain", plane="axial",
        view_desc="axial", package=_PYDICOM[0], licence=_PYDICOM[1], origin="pydicom-data 693_UNCI.dcm",
        horizontal="lr", vertical="ap", note="lossy-compressed sample: blocky, featureless brain",
    )
    return Image2D(info, img, inner, _spacing(ds), _bbox(head))


def _ct_spine_small() -> Image2D | None:
    ds = _dicom("CT_small.dcm")
    if ds is None:
        return None
    hu = _hu(ds)
    body = _largest_component(ndi.binary_fill_holes(ndi.gaussian_filter(hu, 1.0) > -300))
    body = ndi.binary_erosion(body, iterations=3)
    img = _window(hu, 60, 500)
    info = SourceInfo(
        key="ct_spine", title="Chest CT at a thoracic vertebra (CT_small.dcm)", modality="ct", organ="spine",
        plane="axial", view_desc="axial", package="pydicom", licence="MIT", origin="pydicom CT_small.dcm",
        horizontal="lr", vertical="ap", note="small field of view centred on a thoracic vertebra",
    )
    return Image2D(info, img, body, _spacing(ds), (0, 0, hu.shape[0], hu.shape[1]))


def _xr_chest() -> Image2D | None:
    ds = _dicom("RG1_UNCI.dcm")
    if ds is None:
        return None
    a = ds.pixel_array.astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = a.max() - a
    small = a[::4, ::4]
    lo, hi = np.percentile(small, [0.5, 99.5])
    img = (np.clip((a - lo) / (hi - lo), 0, 1) ** 1.6 * 0.9).astype(np.float32)  # gamma: darker lungs
    # lungs: dark regions inside a central box of the thorax (which cuts them from the air above the
    # shoulders), the two largest components
    sm = ndi.gaussian_filter(img[::4, ::4], 6)
    dark = sm < np.percentile(sm, 40)
    h4, w4 = dark.shape
    box = np.zeros_like(dark)
    box[int(0.1 * h4): int(0.85 * h4), int(0.05 * w4): int(0.95 * w4)] = True
    lab, n = ndi.label(ndi.binary_opening(dark & box, iterations=3))
    sizes = sorted(((int((lab == i).sum()), i) for i in range(1, n + 1)), reverse=True)
    lungs = np.zeros_like(dark)
    for _, i in sizes[:2]:
        lungs |= lab == i
    lungs = ndi.binary_fill_holes(ndi.binary_closing(lungs, iterations=4))
    lungs = ndi.binary_erosion(lungs, iterations=3)
    lungs = np.kron(lungs, np.ones((4, 4), dtype=bool))[: a.shape[0], : a.shape[1]]
    pad = np.zeros(a.shape, dtype=bool)
    pad[: lungs.shape[0], : lungs.shape[1]] = lungs
    info = SourceInfo(
        key="xr_chest", title="Chest radiograph (RG1_UNCI.dcm)", modality="x-ray", organ="chest",
        plane=None, view_desc="PA", package=_PYDICOM[0], licence=_PYDICOM[1],
        origin="pydicom-data RG1_UNCI.dcm", horizontal="lr", vertical="ud",
        note="pixel spacing is 0 in the file, so sizes are not given in mm; lesions are placed in the lungs",
    )
    return Image2D(info, img, pad, None, (0, 0, a.shape[0], a.shape[1]))


def _xr_leg() -> Image2D | None:
    ds = _dicom("RG3_UNCI.dcm")
    if ds is None:
        return None
    a = ds.pixel_array.astype(np.float32)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = a.max() - a
    img = _scale_with_headroom(a, np.ones(a.shape, bool), top=0.95)
    info = SourceInfo(
        key="xr_leg", title="Lower-leg radiograph (RG3_UNCI.dcm)", modality="x-ray", organ="leg", plane=None,
        view_desc="frontal", package=_PYDICOM[0], licence=_PYDICOM[1], origin="pydicom-data RG3_UNCI.dcm",
        lesions=False, note="shows a real non-ossifying fibroma of the distal tibia: recognition questions only",
    )
    return Image2D(info, img, np.ones(a.shape, bool), _spacing(ds), (0, 0, a.shape[0], a.shape[1]))


def _mr_shoulder() -> Image2D | None:
    ds = _dicom("MR2_UNCI.dcm")
    if ds is None:
        return None
    a = ds.pixel_array.astype(np.float32)
    sm = ndi.gaussian_filter(a[::2, ::2], 3)
    body = _largest_component(ndi.binary_fill_holes(sm > 0.25 * np.percentile(sm, 95)))
    body = ndi.binary_erosion(ndi.binary_opening(body, iterations=4), iterations=8)
    body = np.kron(body, np.ones((2, 2), dtype=bool))[: a.shape[0], : a.shape[1]]
    img = _scale_with_headroom(a, body, top=0.8, low_pct=0)
    info = SourceInfo(
        key="mr_shoulder", title="Shoulder MR, T1 spin echo (MR2_UNCI.dcm)", modality="mri", organ="shoulder",
        plane=None, view_desc="oblique", package=_PYDICOM[0], licence=_PYDICOM[1],
        origin="pydicom-data MR2_UNCI.dcm", vertical="ud",
        note="oblique plane: no plane or left/right questions",
    )
    return Image2D(info, img, body, _spacing(ds), _bbox(body))


def _mr_abdomen() -> Image2D | None:
    ds = _dicom("MR-SIEMENS-DICOM-WithOverlays.dcm")
    if ds is None:
        return None
    a = ds.pixel_array.astype(np.float32)
    body = _largest_component(ndi.binary_fill_holes(ndi.gaussian_filter(a, 2) > 0.15 * np.percentile(a, 99)))
    img = _scale_with_headroom(a, body, top=0.9, low_pct=0)
    info = SourceInfo(
        key="mr_abdomen", title="Abdominal MR, T1 VIBE (MR-SIEMENS-DICOM-WithOverlays.dcm)", modality="mri",
        organ="abdomen", plane="axial", view_desc="axial", package=_PYDICOM[0], licence=_PYDICOM[1],
        origin="pydicom-data MR-SIEMENS-DICOM-WithOverlays.dcm", lesions=False,
        note="shows a real liver lesion (marked by the file's overlay): recognition questions only",
    )
    return Image2D(info, img, body, _spacing(ds), _bbox(body))


def _us_lymph() -> Image2D | None:
    ds = _dicom("US1_UNCI.dcm")
    if ds is None:
        return None
    rgb = ds.pixel_array.astype(np.float32) / 255.0
    info = SourceInfo(
        key="us_lymph", title="Lymph-node ultrasound, power Doppler (US1_UNCI.dcm)", modality="ultrasound",
        organ="lymph node", plane=None, view_desc="b-mode with power doppler", package=_PYDICOM[0],
        licence=_PYDICOM[1], origin="pydicom-data US1_UNCI.dcm", lesions=False, colour=True,
        note="annotated screen capture without pixel spacing: recognition questions only",
    )
    h, w = rgb.shape[:2]
    return Image2D(info, rgb, np.ones((h, w), bool), None, (0, 0, h, w))


def _us_pelvis() -> Image2D | None:
    ds = _dicom("gdcm-US-ALOKA-16.dcm")
    if ds is None:
        return None
    from pydicom.pixels import apply_color_lut

    rgb = apply_color_lut(ds.pixel_array, ds).astype(np.float32) / 65535.0
    grey = rgb.mean(axis=-1)
    spacing = None
    region = (0, 0, grey.shape[0], grey.shape[1])
    seq = ds.get("SequenceOfUltrasoundRegions")
    if seq:
        r = seq[0]
        region = (int(r.RegionLocationMinY0), int(r.RegionLocationMinX0),
                  int(r.RegionLocationMaxY1) + 1, int(r.RegionLocationMaxX1) + 1)
        if int(r.PhysicalUnitsXDirection) == 3 and abs(float(r.PhysicalDeltaX) - float(r.PhysicalDeltaY)) < 1e-6:
            spacing = float(r.PhysicalDeltaX) * 10.0  # cm -> mm
    r0, c0, r1, c1 = region
    inside = np.zeros(grey.shape, bool)
    inside[r0:r1, c0:c1] = True
    sm = ndi.gaussian_filter(grey, 3)
    tissue = ndi.binary_fill_holes(_largest_component((sm > 0.06) & inside))
    tissue = ndi.binary_erosion(tissue, iterations=8)
    img = _scale_with_headroom(grey, tissue, top=0.8, low_pct=0)
    info = SourceInfo(
        key="us_pelvis", title="Pelvic ultrasound, B-mode (gdcm-US-ALOKA-16.dcm, left panel)",
        modality="ultrasound", organ="pelvis", plane=None, view_desc="B-mode", package=_PYDICOM[0],
        licence=_PYDICOM[1], origin="pydicom-data gdcm-US-ALOKA-16.dcm", vertical="ud",
        note="left panel only (the file's first ultrasound region, which carries the pixel spacing)",
    )
    return Image2D(info, img, tissue, spacing, region)


def _nm_bone() -> Image2D | None:
    ds = _dicom("JPEG2000_UNC.dcm")
    if ds is None:
        return None
    a = np.clip(ds.pixel_array.astype(np.float32), 0, None)
    sm = ndi.gaussian_filter(a, 2)
    body = _largest_component(ndi.binary_fill_holes(sm > 0.12 * np.percentile(sm, 99)))
    body = ndi.binary_erosion(body, iterations=2)
    img = _scale_with_headroom(a, body, top=1.0, low_pct=0) ** 0.6 * 0.75  # gamma: show soft tissue
    info = SourceInfo(
        key="nm_bone", title="Whole-body bone scintigraphy (JPEG2000_UNC.dcm)",
        modality="nuclear medicine", organ="whole body", plane=None, view_desc="whole-body",
        package=_PYDICOM[0], licence=_PYDICOM[1], origin="pydicom-data JPEG2000_UNC.dcm", vertical="ud",
        note="the file does not say whether the view is anterior or posterior: no left/right questions",
    )
    return Image2D(info, img, body, _spacing(ds), _bbox(body))


def _fundus() -> Image2D | None:
    try:
        from skimage import data
    except Exception:
        return None
    rgb = data.retina().astype(np.float32) / 255.0
    lum = rgb.mean(-1)
    small = _largest_component(ndi.binary_fill_holes(ndi.gaussian_filter(lum[::4, ::4], 1) > 0.08))
    field_ = np.kron(small, np.ones((4, 4), dtype=bool))[: lum.shape[0], : lum.shape[1]]
    inner = np.kron(ndi.binary_erosion(small, iterations=12), np.ones((4, 4), dtype=bool))[: lum.shape[0], : lum.shape[1]]
    info = SourceInfo(
        key="fundus", title="Fundus photograph of a normal left eye (skimage.data.retina)",
        modality="fundus photograph", organ="retina", plane=None, view_desc="",
        package="scikit-image", licence="CC0 1.0 (image), scikit-image BSD-3-Clause",
        origin="skimage.data.retina (Wikimedia Commons, M. Haggstrom)", vertical="ud", colour=True,
    )
    return Image2D(info, rgb, inner, None, _bbox(field_))


def _pathology() -> Image2D | None:
    try:
        from skimage import data
    except Exception:
        return None
    rgb = data.immunohistochemistry().astype(np.float32) / 255.0
    h, w = rgb.shape[:2]
    inner = np.zeros((h, w), bool)
    m = int(0.06 * h)
    inner[m:-m, m:-m] = True
    info = SourceInfo(
        key="pathology", title="Colonic glands, IHC with haematoxylin (skimage.data.immunohistochemistry)",
        modality="pathology", organ="colon", plane=None, view_desc="", package="scikit-image",
        licence="no known copyright restrictions (CMMI), scikit-image BSD-3-Clause",
        origin="skimage.data.immunohistochemistry", vertical="ud", colour=True,
    )
    return Image2D(info, rgb, inner, None, (0, 0, h, w))


_LOADERS_2D = (_ct_head_693, _ct_spine_small, _xr_chest, _mr_shoulder, _us_pelvis, _nm_bone, _fundus,
               _pathology, _xr_leg, _mr_abdomen, _us_lymph)


def _reduce(src: Image2D, max_side: int = 800) -> Image2D:
    """Block-average large sources down to at most ``max_side`` pixels (faster framing, same look)."""
    h, w = src.image.shape[:2]
    f = int(np.ceil(max(h, w) / max_side))
    if f <= 1:
        return src
    hh, ww = h // f * f, w // f * f
    img = src.image[:hh, :ww]
    img = img.reshape(hh // f, f, ww // f, f, *img.shape[2:]).mean(axis=(1, 3)).astype(np.float32)
    mask = src.mask[:hh, :ww].reshape(hh // f, f, ww // f, f).mean(axis=(1, 3)) > 0.5
    r0, c0, r1, c1 = src.crop
    return Image2D(src.info, img, mask, None if src.spacing is None else src.spacing * f,
                   (r0 / f, c0 / f, r1 / f, c1 / f))


def load_2d_sources() -> tuple[Image2D, ...]:
    """All 2D sources that load on this machine (cached; arrays are read-only)."""
    return _load_2d()[0]


def missing_2d_sources() -> tuple[str, ...]:
    """The 2D sources that did not load on this machine (their loaders' names, e.g. ``_nm_bone``)."""
    return _load_2d()[1]


@lru_cache(maxsize=1)
def _load_2d() -> tuple[tuple[Image2D, ...], tuple[str, ...]]:
    out, missing = [], []
    for fn in _LOADERS_2D:
        src = fn()
        if src is None:
            missing.append(fn.__name__)
            continue
        src = _reduce(src)
        src.image.setflags(write=False)
        src.mask.setflags(write=False)
        out.append(src)
    return tuple(out), tuple(missing)


# --------------------------------------------------------------------------------------------- volumes


def _mni_info(plane: str) -> SourceInfo:
    return SourceInfo(
        key="mni", title="MNI152 ICBM 2009a nonlinear T1 template (nilearn)", modality="mri", organ="brain", plane=plane,
        view_desc=plane, package="nilearn",
        licence="free use with the copyright notice (McConnell Brain Imaging Centre, see the card)",
        origin="nilearn.datasets.load_mni152_template(resolution=1)",
        horizontal="ap" if plane == "sagittal" else "lr", vertical="ap" if plane == "axial" else "ud",
        note="an average-brain template, skull-stripped",
    )


@lru_cache(maxsize=1)
def load_mni() -> Volume | None:
    """The 1 mm MNI152 T1 template and its brain mask, reoriented to RAS+.

    Same arrays as ``nilearn.datasets.load_mni152_template(resolution=1)`` (divided by its maximum)
    and ``load_mni152_brain_mask(resolution=1)`` (template > 0.2). The file is read with nibabel
    directly when it is found in the nilearn package, which avoids importing scikit-learn (slow to import).
    """
    try:
        import nibabel as nib
    except Exception:
        return None
    img = None
    spec = importlib.util.find_spec("nilearn")
    if spec is not None and spec.submodule_search_locations:
        path = (Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data"
                / "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz")
        if path.is_file():
            img = nib.load(str(path))
    if img is None:
        try:
            from nilearn import datasets

            img = datasets.load_mni152_template(resolution=1)
        except Exception:
            return None
    img = nib.as_closest_canonical(img)
    data = np.asarray(img.get_fdata(dtype=np.float32))
    data = data / max(float(data.max()), 1e-6)
    mask = _drop_small_parts(data > 0.2, 2)  # nilearn's brain mask, without specks beside the brain
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    scaled = _scale_with_headroom(data, mask, top=0.8, low_pct=0)
    # RAS+: axis 0 -> patient's right, 1 -> anterior, 2 -> superior
    planes = {
        "axial": PlaneGeometry(through=2, row_axis=1, row_flip=True, col_axis=0, col_flip=True),
        "coronal": PlaneGeometry(through=1, row_axis=2, row_flip=True, col_axis=0, col_flip=True),
        "sagittal": PlaneGeometry(through=0, row_axis=2, row_flip=True, col_axis=1, col_flip=True),
    }
    scaled.setflags(write=False)
    mask.setflags(write=False)
    return Volume("mni", {p: _mni_info(p) for p in PLANES}, scaled, mask, zooms, planes)


def find_invesalius() -> Path | None:
    """The optional InVesalius example head CT (Debian package invesalius-examples), if installed."""
    for cand in INVESALIUS_CANDIDATES:
        if Path(cand).is_file():
            return Path(cand)
    return None


def _inv_info(plane: str) -> SourceInfo:
    return SourceInfo(
        key="inv", title="Head CT volume (InVesalius example Cranium.inv3)", modality="ct", organ="brain",
        plane=plane, view_desc=plane, package="invesalius-examples (Debian, optional)", licence="GPL-2",
        origin="/usr/share/doc/invesalius-examples/examples/Cranium.inv3 (matrix.dat)",
        horizontal="ap" if plane == "sagittal" else "lr", vertical="ap" if plane == "axial" else "ud",
        note="matrix.dat holds the DICOM rows upside down; columns assumed as in DICOM (patient's left on the right)",
    )


@lru_cache(maxsize=2)
def load_invesalius(path: str | None = None) -> Volume | None:
    """The 108 x 256 x 256 head CT in ``Cranium.inv3`` (a tar.gz holding ``matrix.dat``), or None."""
    p = Path(path) if path else find_invesalius()
    if p is None or not p.is_file():
        return None
    try:
        raw = b""
        with tarfile.open(p, "r:gz") as tar:
            for member in tar:  # one pass over the stream
                if member.name.endswith("matrix.dat"):
                    raw = tar.extractfile(member).read()  # type: ignore[union-attr]
                    break
        hu = np.frombuffer(raw, dtype=np.int16).reshape(108, 256, 256).astype(np.float32)
    except Exception:
        return None
    spacing = (1.5, 0.9570312, 0.9570312)  # (z, y, x) from main.plist
    # brain: soft tissue inside the skull. Found at half in-plane resolution (the masks are smooth): erode to cut
    # bridges to the scalp, keep the largest 3D part, grow back, fill holes slice by slice
    half = ndi.uniform_filter(hu, size=(1, 2, 2))[:, ::2, ::2]
    soft = ndi.binary_opening((half > -15) & (half < 100), structure=np.ones((1, 3, 3), bool))
    ball = ndi.generate_binary_structure(3, 1)
    core = _largest_component(ndi.binary_erosion(soft, structure=ball, iterations=2))
    brain = ndi.binary_dilation(core, structure=ball, iterations=2) & soft
    brain = _fill_holes_2d_stack(brain, 0)
    brain = np.repeat(np.repeat(brain, 2, axis=1), 2, axis=2) & (hu < 120)
    brain = ndi.binary_erosion(brain, structure=np.ones((1, 3, 3), bool), iterations=1)
    brain = _drop_small_parts(brain, 0)
    data = _window(hu, 40, 100)
    # axis 0: inferior -> superior; axis 1: posterior -> anterior (InVesalius stores the DICOM rows
    # upside down); axis 2: the DICOM columns, patient's right -> left
    planes = {
        "axial": PlaneGeometry(through=0, row_axis=1, row_flip=True, col_axis=2, col_flip=False),
        "coronal": PlaneGeometry(through=1, row_axis=0, row_flip=True, col_axis=2, col_flip=False),
        "sagittal": PlaneGeometry(through=2, row_axis=0, row_flip=True, col_axis=1, col_flip=True),
    }
    data.setflags(write=False)
    brain.setflags(write=False)
    return Volume("inv", {pl: _inv_info(pl) for pl in PLANES}, data, brain, spacing, planes)
