"""The demo dataset's lesion attributes: balanced per source / plane / split, and labels where they land."""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("pydicom")
pytest.importorskip("nibabel")
pytest.importorskip("skimage")

from scipy.stats import chi2_contingency  # noqa: E402

from amif.data.records import SPLITS, load_caption_split, load_split, resolve_image  # noqa: E402
from amif_demo.data import build_demo_dataset  # noqa: E402
from amif_demo.data import sources as src_mod  # noqa: E402
from amif_demo.data.build import Study, _Builder  # noqa: E402
from amif_demo.data.lesions import size_class  # noqa: E402
from amif_demo.data.schedule import (  # noqa: E402
    COUNT_PROBS,
    INTENSITIES,
    SIDES,
    LesionPlan,
    balanced_sequence,
    count_schedule,
)
from amif_demo.pipeline import DEFAULT_SCALE  # noqa: E402

# ------------------------------------------------------------------------------------ the schedule


def test_count_schedule_follows_the_probabilities():
    for n in (1, 3, 7, 16, 32, 80):
        counts = Counter(count_schedule(n))
        assert sum(counts.values()) == n
        for k, p in enumerate(COUNT_PROBS):
            assert abs(counts[k] - p * n) < 1, (n, counts)


def test_balanced_sequence_is_a_full_factorial_when_it_can_be():
    levels = (SIDES, SIDES, INTENSITIES)
    for m in (8, 16, 24):
        seq = balanced_sequence(np.random.default_rng(m), m)
        assert Counter(c[:3] for c in seq) == {c: m // 8 for c in itertools.product(*levels)}
        sizes = Counter(c[3] for c in seq)
        assert max(sizes.values()) - min(sizes.values()) <= 1 and len(sizes) == 3


def _pair_tables(plans: list[LesionPlan]) -> dict[str, Counter]:
    """Contingency tables of every attribute pair of a group's single-lesion studies."""
    rows = [{"h": p.target[0], "v": p.target[1], "intensity": p.intensity, "size": p.size_rank}
            for p in plans if p.n == 1]
    out = {}
    for a, b in itertools.combinations(("h", "v", "intensity", "size"), 2):
        out[f"{a} x {b}"] = Counter((r[a], r[b]) for r in rows)
    return out


def _chance_p(table: Counter) -> float:
    """Chi-square p-value of independence for a 2-D table given as Counter((a, b) -> n)."""
    a_levels = sorted({k[0] for k in table}, key=str)
    b_levels = sorted({k[1] for k in table}, key=str)
    if len(a_levels) < 2 or len(b_levels) < 2:
        return 1.0
    m = np.array([[table.get((x, y), 0) for y in b_levels] for x in a_levels], dtype=float)
    return float(chi2_contingency(m, correction=False)[1])


@pytest.fixture(scope="module")
def default_plan(module_tmp):
    """The plan (studies and their lesion attributes) of the default demo build, without rendering."""
    b = _Builder(module_tmp("plan"), 0, DEFAULT_SCALE, 192, use_invesalius=False)
    return b, b.plan()


def test_default_build_uses_exactly_the_pip_sources(default_plan):
    b, studies = default_plan
    assert set(b.volumes) == {"mni"}  # the Debian InVesalius CT only when asked for
    assert not b.missing
    assert {st.source for st in studies} == {"mni"} | {s.info.key for s in src_mod.load_2d_sources()}


def test_no_attribute_pair_is_correlated_within_a_source_and_plane(default_plan):
    """Side x intensity, side x side, side x size, count x intensity: within every source, plane and
    split of the default build no pair is correlated beyond chance. The chi-square p-value of
    independence is at least 0.4 for the two-level pairs (an independent draw falls below that in
    40 % of cases) and 0.1 for size (three levels), and every marginal is even to one study."""
    _, studies = default_plan
    groups: dict[tuple, list[LesionPlan]] = defaultdict(list)
    for st in studies:
        groups[(st.source, st.plane, st.split)].append(st.lesions)
    checked = 0
    for key, plans in groups.items():
        if all(p.n == 0 for p in plans):  # recognition-only source
            continue
        singles = [p for p in plans if p.n == 1]
        for attr in (lambda p: p.target[0], lambda p: p.target[1], lambda p: p.intensity):
            c = Counter(attr(p) for p in singles)
            assert max(c.values()) - min(c.values()) <= 1, (key, c)
        for name, table in _pair_tables(plans).items():
            if len(singles) >= (8 if "size" in name else 4):  # 3 size levels need more studies to be even
                assert _chance_p(table) >= (0.1 if "size" in name else 0.4), (key, name, table)
                checked += 1
        by_count = Counter((p.n, p.intensity) for p in plans if p.n >= 1)
        for n in (1, 2, 3):
            assert abs(by_count[(n, "brighter")] - by_count[(n, "darker")]) <= 1, (key, by_count)
        if sum(p.n >= 1 for p in plans) >= 8:
            assert _chance_p(Counter((p.n, p.intensity) for p in plans if p.n >= 1)) >= 0.5, key
    assert checked >= 100


def test_test_split_has_enough_single_lesion_studies(default_plan):
    _, studies = default_plan
    per_plane = Counter(st.plane for st in studies if st.split == "test" and st.lesions.n == 1 and st.plane)
    assert set(per_plane) == set(src_mod.PLANES) and min(per_plane.values()) >= 10, per_plane
    singles = sum(1 for st in studies if st.split == "test" and st.lesions.n == 1)
    assert singles >= 60


# ------------------------------------------------------------------------------------ the rendered build


@pytest.fixture(scope="module")
def small_build(module_tmp):
    out = module_tmp("bal") / "ds"
    summary = build_demo_dataset(out, seed=1, scale=0.15, image_size=128, progress=False)
    return out, summary, {s: load_split(out, s) for s in SPLITS}, {s: load_caption_split(out, s) for s in SPLITS}


def test_rendered_lesions_keep_their_planned_attributes(small_build):
    """Placement retries move a lesion or the slice, never its count, intensity, side or size class."""
    _, summary, vqa, _ = small_build
    assert summary["placement_fallbacks"] == 0
    checked = 0
    for s in SPLITS:
        for r in vqa[s]:
            plan, lesions = r.extra["lesion_plan"], r.extra["lesions"]
            assert len(lesions) == plan["n"]
            assert {les["intensity"] for les in lesions} <= {plan["intensity"]}
            if plan["n"] == 1:
                les = lesions[0]
                ref_r, ref_c = r.extra["reference_px"]
                th, tv = plan["target"]
                if r.extra["axes"]["horizontal"]:  # an axis without questions is not constrained
                    assert np.sign(les["center_px"][1] - ref_c) == th
                if r.extra["axes"]["vertical"]:
                    assert np.sign(les["center_px"][0] - ref_r) == tv
                if les["diameter_mm"] is not None:
                    assert size_class(les["diameter_mm"]) == les["size"]
            checked += 1
    assert checked > 100


def test_position_answers_are_balanced_per_source_and_plane(small_build):
    _, _, vqa, _ = small_build
    seen = 0
    for s in SPLITS:
        by_group: dict[tuple, Counter] = defaultdict(Counter)
        for r in vqa[s]:
            if r.question_type == "position":
                q = r.question.lower()
                axis = "ap" if ("anterior" in q or "posterior" in q) else "ud" if ("upper" in q or "lower" in q) else "lr"
                by_group[(r.extra["source"], r.extra["plane"], r.answer_type, axis)][r.answer] += 1
        for key, c in by_group.items():
            assert len(c) == 2 and len(set(c.values())) == 1, (s, key, c)
            seen += 1
    assert seen >= 10


def test_source_details_name_every_source(small_build):
    out, summary, _, _ = small_build
    assert set(summary["source_details"]) == set(summary["sources"])
    card = (out / "README.md").read_text(encoding="utf-8")
    for key, d in summary["source_details"].items():
        assert f"`{key}`" in card and d["versions"], key
        for name, version in d["versions"].items():
            assert f"{name} {version}" in card


# ------------------------------------------------------------------------------------ labels


def _lesion_centroid(with_lesion: np.ndarray, without: np.ndarray) -> tuple[float, float]:
    diff = np.abs(with_lesion.astype(np.float32) - without.astype(np.float32))
    if diff.ndim == 3:
        diff = diff.mean(-1)
    w = diff > 0.5 * diff.max()
    rr, cc = np.nonzero(w)
    return float(rr.mean()), float(cc.mean())


def _render_pair(b: _Builder, study: Study, plan: LesionPlan):
    """(image with the planned lesion, the same image without it, its record's extra)."""
    r_with = b.render_study(Study(study.study_id, study.split, study.source, study.plane, study.block, plan))[0]
    a_with = np.asarray(Image.open(resolve_image(b.out, r_with.rel_path)).convert("RGB"), dtype=np.float32) / 255
    r_none = b.render_study(Study(study.study_id, study.split, study.source, study.plane, study.block,
                                  LesionPlan(0, None)))[0]
    a_none = np.asarray(Image.open(resolve_image(b.out, r_none.rel_path)).convert("RGB"), dtype=np.float32) / 255
    assert (r_with.extra.get("slice"), r_with.extra.get("jitter")) == (r_none.extra.get("slice"), r_none.extra.get("jitter"))
    return a_with, a_none, r_with


@pytest.mark.parametrize("plane", src_mod.PLANES)
def test_lesions_land_where_their_labels_say_mni(tmp_path, plane):
    """Lesions rendered at every planned side of an MNI plane: found in the pixels on that side, and
    the label agrees with the brain's anatomy (RAS+ voxel coordinates of the lesion's centre)."""
    b = _Builder(tmp_path, 0, 0.05, 96, use_invesalius=False)
    study = next(st for st in b.plan() if st.source == "mni" and st.plane == plane)
    vol = b.volumes["mni"]
    centre_vox = np.array(np.nonzero(vol.mask)).mean(axis=1)  # the brain's centre, RAS+ voxel axes
    for th, tv in itertools.product(SIDES, SIDES):
        for intensity in INTENSITIES:
            a_with, a_none, r = _render_pair(b, study, LesionPlan(1, intensity, (th, tv), 0))
            row, col = _lesion_centroid(a_with, a_none)
            ref_r, ref_c = r.extra["reference_px"]
            assert np.sign(col - ref_c) == th and np.sign(row - ref_r) == tv, (plane, th, tv, row, col)
            pos = r.truth["position"]
            voxel = np.array(r.extra["lesions"][0]["center_voxel"])
            # RAS+: axis 0 grows to the patient's right, 1 anteriorly, 2 superiorly
            if "lr" in pos:
                assert pos["lr"] == ("right" if voxel[0] > centre_vox[0] else "left")
                assert pos["lr"] == ("left" if th > 0 else "right")  # radiological: patient's left on the image right
            if "ap" in pos:
                assert pos["ap"] == ("anterior" if voxel[1] > centre_vox[1] else "posterior")
            if "ud" in pos:
                assert pos["ud"] == ("upper" if voxel[2] > centre_vox[2] else "lower")
                assert pos["ud"] == ("upper" if tv < 0 else "lower")


def test_lesions_land_where_their_labels_say_2d(tmp_path):
    b = _Builder(tmp_path, 0, 0.05, 96, use_invesalius=False)
    studies = {st.source: st for st in b.plan() if st.plane is None}
    for key in ("xr_chest", "nm_bone", "ct_head", "fundus"):  # lr + ud, ud only, lr + ap, colour ud
        info = b.images2d[key].info
        for th, tv in itertools.product(SIDES, SIDES):
            a_with, a_none, r = _render_pair(b, studies[key], LesionPlan(1, "brighter", (th, tv), 0))
            row, col = _lesion_centroid(a_with, a_none)
            ref_r, ref_c = r.extra["reference_px"]
            if info.horizontal:
                assert np.sign(col - ref_c) == th, (key, th, tv, row, col)
            if info.vertical:
                assert np.sign(row - ref_r) == tv, (key, th, tv, row, col)
            pos = r.truth["position"]
            assert set(pos) == {a for a in (info.horizontal, info.vertical) if a}
            if info.horizontal == "lr":
                assert pos["lr"] == ("left" if th > 0 else "right")
            if info.vertical == "ud":
                assert pos["ud"] == ("upper" if tv < 0 else "lower")
            if info.vertical == "ap":
                assert pos["ap"] == ("anterior" if tv < 0 else "posterior")
