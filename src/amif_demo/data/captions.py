"""Radiology-figure-style captions of the demo images, written from the generated ground truth."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from amif.data.mirror import AXIS_WORDS
from amif_demo.data.lesions import intensity_term

_COUNT = {1: "a single", 2: "two", 3: "three"}
_NAME = {  # how a caption names the source image
    "mni": "T1-weighted MRI (MNI152 template)",
    "inv": "non-contrast CT",
    "ct_head": "non-contrast CT",
    "ct_spine": "CT",
    "xr_chest": "radiograph",
    "xr_leg": "radiograph",
    "mr_shoulder": "T1-weighted MRI",
    "mr_abdomen": "T1-weighted MRI",
    "us_pelvis": "ultrasound",
    "us_lymph": "power Doppler ultrasound",
    "nm_bone": "bone scintigraphy",
    "fundus": "colour fundus photograph",
    "pathology": "immunohistochemistry micrograph",
}
_ORGAN_PHRASE = {
    "brain": "the brain", "spine": "the thoracic spine", "chest": "the chest", "shoulder": "the shoulder",
    "pelvis": "the pelvis", "whole body": "", "retina": "the left retina",
    "colon": "colonic mucosa", "leg": "the lower leg", "abdomen": "the upper abdomen",
    "lymph node": "a lymph node",
}
_OPPOSITE = {w: o for a, b in AXIS_WORDS.values() for w, o in ((a, b), (b, a))}


def _location(position: dict[str, str], region: str) -> str:
    """"in the left upper brain" style phrase of a single lesion (empty when no axis applies)."""
    words = [position[a] for a in ("lr", "ap", "ud") if a in position]
    if not words:
        return ""
    if region == "image":
        return f" in the {' '.join(words)} part of the image"
    return f" in the {' '.join(words)} {region}"


def findings(truth: dict) -> str:
    """The findings sentence (no trailing full stop)."""
    lesions = truth["lesions"]
    n = len(lesions)
    if n == 0:
        return "no focal lesion is seen"
    term = intensity_term(truth["modality"], lesions[0]["intensity"])
    noun = "lesion" if n == 1 else "lesions"
    if truth["modality"] == "nuclear medicine":
        desc = f"{_COUNT[n]} focal {noun} with {term}"
    else:
        desc = f"{_COUNT[n]} {term} {noun}"
    sizes = [les["diameter_mm"] for les in lesions if les.get("diameter_mm") is not None]
    if n == 1:
        les = lesions[0]
        if les.get("diameter_mm") is not None:
            desc = desc.replace(f"{_COUNT[1]} ", f"{_COUNT[1]} {les['view_diameter_mm']:.0f} mm ", 1)
        return desc + _location(truth.get("position", {}), truth.get("region", "image"))
    if sizes:
        desc += f", the largest {max(les['view_diameter_mm'] for les in lesions):.0f} mm across"
    sides = {les.get("side") for les in lesions if les.get("side")}
    if len(sides) == 1:
        desc += f", all on the {sides.pop()} side"
    elif len(sides) == 2:
        desc += ", on both sides"
    return desc


def caption(rng: np.random.Generator, source: str, truth: dict) -> str:
    """One caption of one image; the template is chosen with ``rng``."""
    name = _NAME.get(source, truth["modality"])
    organ = _ORGAN_PHRASE.get(truth["organ"], f"the {truth['organ']}")
    of_organ = f" of {organ}" if organ else ""
    view = truth.get("view_desc") or ""
    head = f"{view} {name}{of_organ}" if view else f"{name}{of_organ}"
    head = head[0].upper() + head[1:]
    if not truth.get("lesion_questions", True):
        return head + "."
    f = findings(truth)
    form = int(rng.integers(3))
    if form == 0:
        return f"{head}. {f[0].upper()}{f[1:]}."
    if form == 1:
        if f.startswith("no "):
            return f"{head} without a focal lesion."
        return f"{head} showing {f}."
    sep = ", " if "," in f else " "
    return f"{f[0].upper()}{f[1:]}{sep}on this {view + ' ' if view else ''}{name}{of_organ}."


def side_swapped(truth: dict, axis: str) -> dict | None:
    """``truth`` with the lesions' side on one ``axis`` exchanged (``lr``: left<->right, ``ud``:
    upper<->lower, ``ap``: anterior<->posterior), or None when its caption states no side on that axis
    (no lesion, no such axis, or lesions on both sides).

    The caption of the result is a counterfactual twin: the same image described with the lesion on the
    other side, a pair image-text matching must call not matching (``negative_captions``).
    """
    if not truth.get("lesion_questions", True) or not truth.get("lesions"):
        return None
    position = truth.get("position") or {}
    sides = {les.get("side") for les in truth["lesions"] if les.get("side")}
    if axis not in position and not (axis == "lr" and not position and len(sides) == 1):
        return None

    def flip(pos: dict[str, str]) -> dict[str, str]:
        return {a: _OPPOSITE.get(w, w) if a == axis else w for a, w in pos.items()}

    lesions = []
    for les in truth["lesions"]:
        les = {**les, "position": flip(les.get("position") or {})}
        if axis == "lr" and les.get("side"):
            les["side"] = _OPPOSITE.get(les["side"], les["side"])
        lesions.append(les)
    return {**truth, "position": flip(position), "lesions": lesions}


def negative_captions(seed_rng: Callable[[], np.random.Generator], source: str, truth: dict) -> list[str]:
    """The counterfactual captions of one image: for each axis its caption states a side on, the caption
    with that side exchanged and everything else kept, written with the same template (``seed_rng``
    returns a generator in the state :func:`caption` was given); empty when the caption states no side."""
    text = caption(seed_rng(), source, truth)
    out: list[str] = []
    for axis in ("lr", "ap", "ud"):
        twin = side_swapped(truth, axis)
        if twin is not None:
            other = caption(seed_rng(), source, twin)
            if other != text and other not in out:
                out.append(other)
    return out
