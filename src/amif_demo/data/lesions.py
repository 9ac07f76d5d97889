"""Synthetic focal lesions: sampling (count, size in mm, position inside the mask, intensity) and drawing.

Lesions are soft-edged, slightly lobulated ellipses (2D sources) or ellipsoids (volumes: every view of
a study cuts the same ellipsoid, so its cross-section shrinks a little away from the centre slice).
Their look depends on the modality: a flat, textured blob for CT / MR, speckled for ultrasound, a
projected sphere profile for radiographs, a blurred hot / cold spot for scintigraphy, coloured
blends for fundus photographs and micrographs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from amif_demo.data.schedule import LesionPlan

# size classes (mm): answers "small" (< 20 mm), "medium" (20-35 mm), "large" (>= 35 mm); diameters are
# drawn away from the class edges so that the in-plane cross-section of a volume view stays in class
SIZE_EDGES_MM = (20.0, 35.0)
SIZE_SAMPLE_MM = {"small": (8.0, 17.0), "medium": (23.0, 31.0), "large": (39.0, 50.0)}
SIZE_CLASSES = ("small", "medium", "large")
MIN_FOV_FRACTION = 0.06  # every lesion is at least 6% of the field of view across
MAX_ORGAN_FRACTION = 0.33  # and at most a third of the organ's smaller extent
NO_MM_FRACTION = (0.065, 0.15)  # diameter range (fraction of the field of view) when there is no spacing
SIDE_BAND = 0.10  # single lesions keep this fraction of the organ extent away from its centre lines

INTENSITY_TERMS = {
    "ct": ("hyperdense", "hypodense"),
    "mri": ("hyperintense", "hypointense"),
    "ultrasound": ("hyperechoic", "hypoechoic"),
    "x-ray": ("radiopaque", "radiolucent"),
    "nuclear medicine": ("increased uptake", "decreased uptake"),
    "fundus photograph": ("brighter", "darker"),
    "pathology": ("brighter", "darker"),
}

# brighter lesions need room above the tissue, darker ones room below (on the [0, 1] image scale)
_MAX_BASE_BRIGHT = {"nuclear medicine": 0.55}
_MIN_BASE_DARK = {"nuclear medicine": 0.3, "ultrasound": 0.2, "x-ray": 0.22}


def size_class(diameter_mm: float) -> str:
    """"small" (< 20 mm), "medium" (20-35 mm) or "large" (>= 35 mm)."""
    if diameter_mm < SIZE_EDGES_MM[0]:
        return "small"
    return "medium" if diameter_mm < SIZE_EDGES_MM[1] else "large"


def intensity_term(modality: str, intensity: str) -> str:
    """The modality's word for a brighter / darker lesion (e.g. CT: hyperdense / hypodense)."""
    bright, dark = INTENSITY_TERMS[modality]
    return bright if intensity == "brighter" else dark


@dataclass
class Lesion:
    """One lesion of a study, in the study's output-pixel frame (shared by all its views)."""

    id: str
    row: float
    col: float
    a: float  # semi-axes in output pixels at the lesion's centre
    b: float
    angle: float
    diameter_px: float  # nominal diameter 2*sqrt(a*b)
    diameter_mm: float | None
    size: str | None  # size class, None when the source has no pixel spacing
    intensity: str  # "brighter" / "darker"
    lobes: tuple[int, float, float]
    seed: int
    depth_mm: float | None = None  # volumes: semi-axis across the slices
    centre_slice: float | None = None  # volumes: slice index (fractional) of the centre

    def scale_at(self, offset_mm: float) -> float:
        """In-plane shrink factor of the cross-section ``offset_mm`` away from the centre (volumes)."""
        if self.depth_mm is None:
            return 1.0
        return math.sqrt(max(0.0, 1.0 - (offset_mm / self.depth_mm) ** 2))


@dataclass
class Placement:
    """What the sampler needs to know about the study's frame."""

    mask: np.ndarray  # (S, S) bool, where lesion centres may go (intersection over the views)
    lum: np.ndarray  # (S, S) float luminance of the (first) view, for the contrast check
    mm_per_px: float | None
    modality: str
    horizontal: str | None
    vertical: str | None
    ref: tuple[float, float]  # (row, col) of the organ's centre lines
    extent: tuple[float, float]  # (height, width) of the organ in output pixels
    min_shrink: float = 1.0  # smallest cross-section factor over the views (volumes)


def available_sizes(p: Placement) -> dict[str, tuple[float, float]]:
    """Size classes (with their diameter ranges in mm) that fit this frame and stay visible."""
    if p.mm_per_px is None:
        return {}
    size = p.mask.shape[0]
    lo_vis = MIN_FOV_FRACTION * size * p.mm_per_px / max(p.min_shrink, 0.5)
    hi_fit = MAX_ORGAN_FRACTION * min(p.extent) * p.mm_per_px
    out = {}
    for name, (lo, hi) in SIZE_SAMPLE_MM.items():
        lo2, hi2 = max(lo, lo_vis), min(hi, hi_fit)
        if hi2 - lo2 >= 1.0:
            out[name] = (lo2, hi2)
    return out


@dataclass(frozen=True)
class LesionSpec:
    """A lesion's drawn attributes apart from its location: kept when a placement is retried."""

    size: str | None  # size class, None when the frame has no pixel spacing
    u: float  # where the diameter lies in its class's range (0 = smallest, 1 = largest)
    ratio: float  # axis ratio a / b
    angle: float
    lobes: tuple[int, float, float]
    seed: int
    depth_factor: float  # volumes: semi-axis across the slices, relative to the in-plane radius


def draw_specs(rng: np.random.Generator, plan: LesionPlan, sizes: dict[str, tuple[float, float]]) -> list[LesionSpec]:
    """The attributes of ``plan``'s lesions other than location (sizes: the classes the frame offers).

    A single lesion takes the size class ``plan.size_rank`` (modulo the offered classes), so that
    size is balanced against side and intensity; several lesions stay small / medium so that they fit.
    """
    names = list(sizes)
    specs = []
    for _ in range(plan.n):
        if plan.n == 1:
            size_name = names[plan.size_rank % len(names)] if names else None
        else:
            small = [x for x in names if x != "large"] or names
            size_name = str(rng.choice(small)) if small else None
        specs.append(LesionSpec(
            size=size_name, u=float(rng.uniform(0, 1)), ratio=float(rng.uniform(0.8, 1.25)),
            angle=float(rng.uniform(0, math.pi)),
            lobes=(int(rng.integers(3, 7)), float(rng.uniform(0.0, 0.09)), float(rng.uniform(0, 2 * math.pi))),
            seed=int(rng.integers(2**31 - 1)), depth_factor=float(rng.uniform(0.95, 1.2)),
        ))
    return specs


def _diameter_px(p: Placement, spec: LesionSpec, sizes: dict[str, tuple[float, float]],
                 smallest: bool = False) -> tuple[float, float | None]:
    u = 0.0 if smallest else spec.u
    if spec.size is not None:
        lo, hi = sizes[spec.size]
        d_mm = lo + u * (hi - lo)
        return d_mm / p.mm_per_px, d_mm  # type: ignore[operator]
    s = p.mask.shape[0]
    lo, hi = NO_MM_FRACTION[0] * s, min(NO_MM_FRACTION[1] * s, MAX_ORGAN_FRACTION * min(p.extent))
    return lo + u * max(1.0, hi - lo), None


# Placement constraints, strictest first; a study whose planned lesions fit nowhere under one level
# tries the next, so that its drawn attributes never change: (diameter at the class's low end,
# side-band factor, tissue-brightness slack, centre's minimum depth inside the mask in radii)
RELAX_LEVELS = ((False, 1.0, 0.0, 0.8), (True, 1.0, 0.0, 0.8), (True, 0.5, 0.12, 0.7), (True, 0.5, None, 0.6))


def _candidates(p: Placement, dist: np.ndarray, radius: float, intensity: str, target: tuple[int, int],
                taken: list[tuple[float, float, float]], relax: int = 0) -> np.ndarray:
    _, band_f, slack, depth = RELAX_LEVELS[relax]
    ok = dist >= depth * radius
    rr, cc = np.indices(dist.shape)
    th, tv = target
    th = th if p.horizontal else 0  # an image axis without anatomical meaning (no question) is free
    tv = tv if p.vertical else 0
    if th:
        band = SIDE_BAND * band_f * p.extent[1]
        ok &= (np.sign(cc - p.ref[1]) == th) & (np.abs(cc - p.ref[1]) >= band + 0.25 * radius)
    if tv:
        band = SIDE_BAND * band_f * p.extent[0]
        ok &= (np.sign(rr - p.ref[0]) == tv) & (np.abs(rr - p.ref[0]) >= band + 0.25 * radius)
    for (r0, c0, rad0) in taken:
        ok &= np.hypot(rr - r0, cc - c0) >= rad0 + radius + 3.0
    if not ok.any() or slack is None:
        return ok
    k = max(1, int(round(radius)))
    base = ndi.uniform_filter(p.lum, size=2 * k + 1)
    if intensity == "brighter":
        ok &= base <= _MAX_BASE_BRIGHT.get(p.modality, 0.62) + slack
    else:
        ok &= base >= _MIN_BASE_DARK.get(p.modality, 0.3) - slack
    return ok


def place_lesions(
    rng: np.random.Generator, p: Placement, plan: LesionPlan, specs: list[LesionSpec], study_id: str, *,
    volume: bool = False, centre_slice: float | None = None, relax: int = 0,
) -> list[Lesion] | None:
    """Put ``specs`` (the lesions of ``plan``) inside ``p.mask``; None when they do not fit (the caller
    retries with another location or slice, never with other attributes).

    A single lesion goes to the side(s) ``plan.target`` says (a band around the organ's centre lines
    stays free); all lesions of a study share ``plan.intensity``, so that the intensity question has
    one answer. Only the centres are drawn here. ``relax`` indexes ``RELAX_LEVELS``.
    """
    if plan.n == 0:
        return []
    assert plan.intensity is not None and len(specs) == plan.n
    sizes = available_sizes(p)
    dist = ndi.distance_transform_edt(p.mask)
    lesions: list[Lesion] = []
    taken: list[tuple[float, float, float]] = []
    for k, spec in enumerate(specs):
        if spec.size is not None and spec.size not in sizes:  # this frame does not offer the drawn class
            return None
        d_px, d_mm = _diameter_px(p, spec, sizes, smallest=RELAX_LEVELS[relax][0])
        a, b = d_px / 2 * math.sqrt(spec.ratio), d_px / 2 / math.sqrt(spec.ratio)
        radius = max(a, b) * p.min_shrink if volume else max(a, b)
        ok = _candidates(p, dist, radius, plan.intensity, plan.target, taken, relax)
        idx = np.flatnonzero(ok)
        if idx.size == 0:
            return None
        j = int(idx[rng.integers(idx.size)])
        r, c = divmod(j, p.mask.shape[1])
        r += float(rng.uniform(-0.5, 0.5))
        c += float(rng.uniform(-0.5, 0.5))
        taken.append((r, c, max(a, b)))
        depth = None
        if volume:
            depth = (d_mm if d_mm is not None else d_px) / 2 * spec.depth_factor
        lesions.append(Lesion(
            id=f"{study_id}-L{k + 1}", row=r, col=c, a=a, b=b, angle=spec.angle,
            diameter_px=d_px, diameter_mm=d_mm, size=spec.size if d_mm is not None else None,
            intensity=plan.intensity, lobes=spec.lobes, seed=spec.seed, depth_mm=depth,
            centre_slice=centre_slice,
        ))
    return lesions


# ------------------------------------------------------------------------------------------- drawing


def _smooth_noise(seed: int, shape: tuple[int, int], sigma: float) -> np.ndarray:
    n = ndi.gaussian_filter(np.random.default_rng(seed).standard_normal(shape).astype(np.float32), sigma)
    return n / max(float(n.std()), 1e-6)


def _shape(les: Lesion, shape: tuple[int, int], shrink: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, rnorm): soft inside-ness in [0, 1] and normalised radius of every pixel."""
    a, b = max(les.a * shrink, 0.5), max(les.b * shrink, 0.5)
    rr, cc = np.indices(shape, dtype=np.float32)
    dr, dc = rr - les.row, cc - les.col
    cs, sn = math.cos(les.angle), math.sin(les.angle)
    u, v = dr * cs + dc * sn, -dr * sn + dc * cs
    theta = np.arctan2(v / b, u / a)
    k, amp, phase = les.lobes
    rnorm = np.sqrt((u / a) ** 2 + (v / b) ** 2) / (1.0 + amp * np.sin(k * theta + phase))
    mean_r = math.sqrt(a * b)
    edge = max(0.7, 0.1 * mean_r)
    alpha = 1.0 / (1.0 + np.exp(-np.clip((1.0 - rnorm) * mean_r / edge, -30, 30)))
    return alpha.astype(np.float32), rnorm.astype(np.float32)


def _lum(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else img.mean(axis=-1)


_COLOURS = {
    ("fundus photograph", "brighter"): (0.98, 0.88, 0.55),  # exudate-like
    ("fundus photograph", "darker"): (0.32, 0.05, 0.03),  # haemorrhage-like
    ("pathology", "brighter"): (0.96, 0.92, 0.94),  # pale, cell-poor area
    ("pathology", "darker"): (0.30, 0.22, 0.52),  # dense haematoxylin-stained cluster
}


def draw_lesion(img: np.ndarray, les: Lesion, modality: str, shrink: float = 1.0) -> np.ndarray:
    """``img`` with ``les`` drawn in (a new array); ``shrink`` scales the cross-section (volumes)."""
    out = img.copy()
    shape = img.shape[:2]
    alpha, rnorm = _shape(les, shape, shrink)
    inside = alpha > 0.5
    if not inside.any():
        return out
    lum = _lum(img)
    base = float(np.median(lum[inside]))
    tex = _smooth_noise(les.seed, shape, 1.2)
    up = les.intensity == "brighter"
    if modality in _COLOURS_MODALITIES:
        colour = np.asarray(_COLOURS[(modality, les.intensity)], np.float32)
        strength = 0.85 if modality == "fundus photograph" else 0.8
        if modality == "pathology":  # nuclei-like granularity
            dots = _smooth_noise(les.seed + 1, shape, 0.8)
            colour_map = colour[None, None, :] * (1.0 + 0.12 * dots[..., None])
        else:
            colour_map = colour[None, None, :] * (1.0 + 0.05 * tex[..., None])
        w = (alpha * strength)[..., None]
        out = (1 - w) * out + w * colour_map
        return np.clip(out, 0.0, 1.0).astype(np.float32)
    if modality == "x-ray":
        prof = np.sqrt(np.clip(1.0 - rnorm**2, 0.0, 1.0)) * alpha
        delta = (0.36 if up else -0.3) * prof * (1.0 + 0.05 * tex)
        out = out + delta
    elif modality == "nuclear medicine":
        prof = ndi.gaussian_filter(alpha, 1.0)
        if up:
            out = out + prof * (0.45 + 0.08 * tex)
        else:
            out = out * (1.0 - 0.85 * prof)
    else:
        if modality == "ultrasound":
            target = min(base + 0.42, 0.97) if up else base * 0.25
            speckle = np.random.default_rng(les.seed + 7).gamma(2.0, 0.5, shape).astype(np.float32)
            speckle = ndi.gaussian_filter(speckle, 0.6)
            fill = target * (0.6 + 0.4 * speckle / max(float(speckle.mean()), 1e-6))
        else:  # ct, mri
            gap = 0.42 if up else -0.36
            target = float(np.clip(base + gap, 0.04, 0.97))
            fill = target + 0.035 * tex + 0.25 * (img - base)
        out = (1 - alpha) * out + alpha * fill
    return np.clip(out, 0.0, 1.0).astype(np.float32)


_COLOURS_MODALITIES = {"fundus photograph", "pathology"}


def draw_lesions(img: np.ndarray, lesions: list[Lesion], modality: str,
                 shrinks: list[float] | None = None) -> np.ndarray:
    """All ``lesions`` drawn on ``img`` (shrink factors per lesion for volume views)."""
    out = img
    for i, les in enumerate(lesions):
        out = draw_lesion(out, les, modality, 1.0 if shrinks is None else shrinks[i])
    return out
