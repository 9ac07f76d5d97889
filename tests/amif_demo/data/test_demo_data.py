"""The embedded demo dataset: determinism, splits, lesion placement, answers, captions, balance."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pydicom")
pytest.importorskip("nibabel")
pytest.importorskip("skimage")

from amif.data.records import SPLITS, load_caption_split, load_split, resolve_image  # noqa: E402
from amif.errors import DataError  # noqa: E402
from amif_demo.data import build_demo_dataset, view_mask  # noqa: E402
from amif_demo.data.lesions import MIN_FOV_FRACTION, size_class  # noqa: E402
from amif_demo.data.sources import find_invesalius  # noqa: E402

SCALE = 0.15  # at 0.1 the per-source / plane position balance leaves no position questions
SIZE = 192


@pytest.fixture(scope="module")
def demo(module_tmp):
    out = module_tmp("demo") / "ds"
    summary = build_demo_dataset(out, seed=0, scale=SCALE, image_size=SIZE, progress=False)
    vqa = {s: load_split(out, s) for s in SPLITS}
    caps = {s: load_caption_split(out, s) for s in SPLITS}
    return out, summary, vqa, caps


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _images(vqa) -> dict[str, object]:
    """One VQA record per image (its extra holds the image's ground truth)."""
    out = {}
    for s in SPLITS:
        for r in vqa[s]:
            out.setdefault(r.image, r)
    return out


def test_same_seed_same_bytes(demo, tmp_path):
    out, summary, _, _ = demo
    again = tmp_path / "again"
    summary2 = build_demo_dataset(again, seed=0, scale=SCALE, image_size=SIZE, progress=False)
    assert _digest(out) == _digest(again)
    summary.pop("seconds", None)
    summary2.pop("seconds", None)
    summary2["out_dir"] = summary["out_dir"]
    assert summary == summary2


def test_loads_and_every_image_opens(demo):
    out, summary, vqa, caps = demo
    assert all(summary["questions"][s] == len(vqa[s]) > 0 for s in SPLITS)
    assert all(summary["captions"][s] == len(caps[s]) > 0 for s in SPLITS)
    qids = [r.qid for s in SPLITS for r in vqa[s]]
    assert len(qids) == len(set(qids))
    paths = {r.image for s in SPLITS for r in vqa[s]} | {c.image for s in SPLITS for c in caps[s]}
    for rel in paths:
        with Image.open(resolve_image(out, rel)) as im:
            im.load()
            assert im.size == (SIZE, SIZE) and im.mode in ("L", "RGB")
    for s in SPLITS:
        for r in vqa[s]:
            assert r.split == s and r.study_id and r.answer_type in ("OPEN", "CLOSED")
            assert r.question_type in ("modality", "organ", "plane", "presence", "count", "position", "size",
                                       "intensity")
    readme = (out / "README.md").read_text().lower()
    for needle in ("radiological convention", "gpl-2", "mit", "cc0", "mcconnell", "seen-source caveat"):
        assert needle in readme


def test_splits_share_no_study_and_no_lesion(demo):
    _, _, vqa, caps = demo
    studies = {s: {r.study_id for r in vqa[s]} | {c.study_id for c in caps[s]} for s in SPLITS}
    lesions = {s: set() for s in SPLITS}
    for s in SPLITS:
        for c in caps[s]:
            for les in c.extra["lesions"]:
                assert les["id"].startswith(f"{c.study_id}-L")
                lesions[s].add(les["id"])
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert not studies[a] & studies[b]
                assert not lesions[a] & lesions[b]


def test_volume_slices_are_disjoint_ranges(demo):
    _, _, vqa, _ = demo
    slices = defaultdict(set)
    for s in SPLITS:
        for r in vqa[s]:
            if "slice" in r.extra:
                slices[(r.extra["source"], r.extra["plane"], s)].add(r.extra["slice"])
    assert slices, "the MNI volume should always be used"
    keys = {(src, plane) for src, plane, _ in slices}
    for src, plane in keys:
        train = slices.get((src, plane, "train"), set())
        for other in ("val", "test"):
            for z in slices.get((src, plane, other), set()):
                assert min(abs(z - t) for t in train) >= 2, (src, plane, other, z)


def test_study_views(demo):
    _, _, _, caps = demo
    by_study = defaultdict(list)
    for s in SPLITS:
        for c in caps[s]:
            by_study[c.study_id].append(c)
    for sid, views in by_study.items():
        if views[0].extra["single_view"]:
            assert [v.view for v in views] == ["single"]
        else:
            assert sorted(v.view for v in views) == ["view1", "view2"]
            ids = [sorted(les["id"] for les in v.extra["lesions"]) for v in views]
            assert ids[0] == ids[1], sid  # both views show the same lesions


def _ellipse(les, shape):
    rr, cc = np.indices(shape, dtype=np.float32)
    r0, c0 = les["center_px"]
    a, b = les["axes_px"]
    cs, sn = math.cos(les["angle"]), math.sin(les["angle"])
    u, v = (rr - r0) * cs + (cc - c0) * sn, -(rr - r0) * sn + (cc - c0) * cs
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def test_lesions_inside_the_body_and_visible(demo):
    _, _, vqa, _ = demo
    n_checked = 0
    for rec in _images(vqa).values():
        lesions = rec.extra["lesions"]
        if not lesions:
            continue
        mask = view_mask(rec.extra)
        for les in lesions:
            r, c = (int(round(x)) for x in les["center_px"])
            assert mask[r, c], (rec.image, les["id"])
            disc = _ellipse(les, mask.shape)
            assert mask[disc].mean() >= 0.8, (rec.image, les["id"], mask[disc].mean())
            assert les["diameter_px"] >= 0.85 * MIN_FOV_FRACTION * SIZE
            n_checked += 1
    assert n_checked > 20


def test_lesion_contrast_matches_intensity(demo):
    out, _, vqa, _ = demo
    good = total = 0
    for rec in _images(vqa).values():
        lesions = rec.extra["lesions"]
        if len(lesions) != 1:
            continue
        les = lesions[0]
        with Image.open(resolve_image(out, rec.image)) as im:
            a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        rr, cc = np.indices(a.shape)
        d = np.hypot(rr - les["center_px"][0], cc - les["center_px"][1])
        rad = les["diameter_px"] / 2
        inner = a[d <= 0.5 * rad].mean()
        ring = a[(d >= 1.4 * rad) & (d <= 2.0 * rad)].mean()
        sign = 1 if les["intensity"] == "brighter" else -1
        good += (inner - ring) * sign >= 0.06
        total += 1
    assert total >= 5 and good / total >= 0.85, (good, total)


def _axis_of(question: str) -> str:
    q = question.lower()
    if "anterior" in q or "posterior" in q:
        return "ap"
    if "upper" in q or "lower" in q:
        return "ud"
    return "lr"


def _side(extra, les, axis):
    ref_r, ref_c = extra["reference_px"]
    r, c = les["center_px"]
    axes = extra["axes"]
    if axis == "lr":
        return "left" if c > ref_c else "right"  # patient's left on the image right
    if axis == "ud":
        return "upper" if r < ref_r else "lower"
    if axes["horizontal"] == "ap":  # sagittal: anterior on the image left
        return "anterior" if c < ref_c else "posterior"
    return "anterior" if r < ref_r else "posterior"  # axial: anterior at the top


def test_answers_agree_with_ground_truth(demo):
    _, _, vqa, _ = demo
    seen = Counter()
    for s in SPLITS:
        for r in vqa[s]:
            x, q, a = r.extra, r.question, r.answer
            lesions = x["lesions"]
            n = len(lesions)
            qt = r.question_type
            seen[qt] += 1
            if qt in ("modality", "organ", "plane") and r.answer_type == "OPEN":
                assert a == x[qt]
            elif qt == "presence":
                expect = n == 0 if q == "Is this image normal?" else n > 0
                assert a == ("yes" if expect else "no"), q
            elif qt == "count" and r.answer_type == "OPEN":
                assert a == str(n)
            elif qt == "count":
                if "more than one" in q or "multiple" in q:
                    expect = n > 1
                else:
                    k = 1 if "exactly one" in q else {"two": 2, "three": 3}[re.search(r"(two|three)", q).group(1)]
                    expect = n == k
                assert a == ("yes" if expect else "no"), q
            elif qt == "position":
                assert n == 1
                axis = _axis_of(q)
                truth = _side(x, lesions[0], axis)
                assert truth == lesions[0]["position"][axis]
                if r.answer_type == "OPEN":
                    assert a == truth, q
                else:
                    asked = re.search(r"\b(left|right|upper|lower|anterior|posterior)\b", q).group(1)
                    assert a == ("yes" if asked == truth else "no"), q
            elif qt == "size":
                assert n == 1
                les = lesions[0]
                cls = size_class(les["diameter_mm"])
                assert cls == les["size"] == size_class(les["view_diameter_mm"])
                if r.answer_type == "OPEN":
                    assert a == cls
                elif "larger than 35 mm" in q:
                    assert a == ("yes" if cls == "large" else "no")
                elif "smaller than 2 cm" in q:
                    assert a == ("yes" if cls == "small" else "no")
                else:
                    assert a == ("yes" if cls != "small" else "no")
            elif qt == "intensity":
                assert n >= 1 and len({les["intensity"] for les in lesions}) == 1
                les = lesions[0]
                if r.answer_type == "OPEN":
                    assert a in (les["intensity"], les["intensity_term"])
                else:
                    bright_words = ("brighter", "hyperdense", "hyperintense", "hyperechoic", "radiopaque", "increased")
                    asked_bright = any(w in q for w in bright_words)
                    assert a == ("yes" if asked_bright == (les["intensity"] == "brighter") else "no"), q
    for qt in ("presence", "count", "position", "intensity", "modality", "organ", "plane"):
        assert seen[qt] > 0, qt


def test_lesion_answers_are_balanced(demo):
    out, summary, vqa, _ = demo
    for s in SPLITS:
        presence = Counter(r.answer for r in vqa[s] if r.question_type == "presence")
        assert presence["yes"] == presence["no"] > 0
        counts = Counter(r.answer for r in vqa[s] if r.question_type == "count" and r.answer_type == "OPEN")
        if counts:
            assert max(counts.values()) == min(counts.values())
        for axis_pair in (("left", "right"), ("upper", "lower"), ("anterior", "posterior")):
            pos = Counter(r.answer for r in vqa[s] if r.question_type == "position" and r.answer in axis_pair)
            assert pos[axis_pair[0]] == pos[axis_pair[1]]
        for qt in ("presence", "count", "position", "size", "intensity"):
            closed = Counter(r.answer for r in vqa[s] if r.question_type == qt and r.answer_type == "CLOSED")
            assert closed["yes"] == closed["no"]


def test_no_wording_carries_an_answer_prior(demo):
    """Every balanced question text has each of its answers equally often within a split: e.g. "Is this
    image normal?" is not mostly "no", "Is this an MRI scan?" not mostly "yes"."""
    _, _, vqa, _ = demo
    checked = 0
    for s in SPLITS:
        by_text: dict[str, Counter] = defaultdict(Counter)
        for r in vqa[s]:
            balanced = r.answer_type == "CLOSED" or r.question_type in ("count", "position", "size", "intensity")
            if balanced:
                by_text[r.question][r.answer] += 1
        for q, answers in by_text.items():
            assert len(answers) >= 2 and len(set(answers.values())) == 1, (s, q, answers)
            checked += 1
    assert checked > 20


def question_only_accuracy(train, test) -> float:
    """Accuracy on the lesion questions of ``test`` of the most frequent training answer per question."""
    by_q, by_t = defaultdict(Counter), defaultdict(Counter)
    for r in train:
        by_q[r.question][r.answer] += 1
        by_t[(r.question_type, r.answer_type)][r.answer] += 1
    hits = total = 0
    for r in test:
        if not r.extra["image_dependent"]:
            continue
        hist = by_q.get(r.question) or by_t.get((r.question_type, r.answer_type))
        guess = hist.most_common(1)[0][0] if hist else "yes"
        hits += guess == r.answer
        total += 1
    return hits / max(total, 1)


def test_question_only_baseline_is_near_chance(demo):
    _, _, vqa, _ = demo
    assert question_only_accuracy(vqa["train"], vqa["test"]) < 0.62


def test_captions_mention_the_findings(demo):
    _, _, _, caps = demo
    words = {1: "single", 2: "two", 3: "three"}
    for s in SPLITS:
        for c in caps[s]:
            text = c.caption.lower()
            assert c.extra["modality"] and c.caption.endswith(".")
            n = c.extra["n_lesions"]
            if n is None:  # recognition-only source: no findings claimed
                assert "lesion" not in text
                continue
            if n == 0:
                assert "no focal lesion" in text or "without a focal lesion" in text
                continue
            les = c.extra["lesions"][0]
            assert words[n] in text
            assert les["intensity_term"] in text
            if n == 1 and les["view_diameter_mm"] is not None:
                assert f"{les['view_diameter_mm']:.0f} mm" in text
            if n == 1 and les["position"].get("lr"):
                assert les["position"]["lr"] in text


def test_optional_invesalius_and_small_build(tmp_path):
    summary = build_demo_dataset(tmp_path / "small", seed=3, scale=0.02, image_size=96, progress=False,
                                 use_invesalius=False)
    assert "inv" not in summary["sources"] and "mni" in summary["sources"]
    assert summary["images"]["test"] > 0
    if find_invesalius() is None:
        with pytest.raises(DataError):
            build_demo_dataset(tmp_path / "inv", scale=0.02, image_size=96, progress=False, use_invesalius=True)


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(DataError):
        build_demo_dataset(tmp_path, scale=0.02, progress=False)
    assert (tmp_path / "keep.txt").read_text() == "mine"


def test_counterfactual_captions_swap_exactly_one_side(demo):
    """Each twin in ``negative_captions`` is its caption with the words of one axis exchanged, nothing else."""
    from amif_demo.data.captions import _OPPOSITE

    _, _, _, caps = demo
    axis_of = {"left": "lr", "right": "lr", "upper": "ud", "lower": "ud", "anterior": "ap", "posterior": "ap"}
    n_twins = 0
    for s in SPLITS:
        for c in caps[s]:
            twins = c.extra.get("negative_captions", [])
            lesions = c.extra["lesions"] or []
            position = lesions[0]["position"] if len(lesions) == 1 else {}
            sides = {les["side"] for les in lesions if les.get("side")}
            stated = len(position) if position else int(len(lesions) > 1 and len(sides) == 1)
            assert len(twins) == stated, (c.caption, twins)
            axes = set()
            for twin in twins:
                a, b = c.caption.split(), twin.split()
                assert len(a) == len(b)
                diff = [(u, v) for u, v in zip(a, b) if u != v]
                assert len(diff) == 1 and _OPPOSITE[diff[0][0]] == diff[0][1], (c.caption, twin)
                axes.add(axis_of[diff[0][0]])
                n_twins += 1
            assert len(axes) == len(twins)
    assert n_twins > 0
