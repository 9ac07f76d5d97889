"""Build the demo Med-VQA dataset: plan studies and splits, render views, add lesions, write records.

Entry point: :func:`build_demo_dataset`. Everything is drawn from generators seeded with the build seed
and the study id, so the same seed gives byte-identical files.
"""

from __future__ import annotations

import itertools
import shutil
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from amif.data.records import SPLITS, CaptionRecord, VQARecord, write_records
from amif.errors import DataError
from amif_demo.data import captions as cap
from amif_demo.data import lesions as les_mod
from amif_demo.data import questions as qmod
from amif_demo.data import sources as src_mod
from amif_demo.data.geometry import Frame, resample, resample_mask, square_frame
from amif_demo.data.schedule import COUNT_PROBS, LesionPlan, plan_group

# studies per split (train, val, test): per plane for volumes, per source for 2D images; the test
# split is larger than the validation split so that per-type figures (position: single-lesion
# studies only) rest on enough studies
VOLUME_STUDIES = {"mni": (40, 7, 16), "inv": (24, 4, 6)}
IMAGE_STUDIES = (24, 4, 8)
RECOGNITION_STUDIES = (6, 1, 2)
SLICE_TRIES = 8  # volumes: slice pairs tried per study (10 placements each) before it is a fallback
FRAME_TRIES = 6  # 2D sources: framings tried per study (10 placements each)
VIEW_GAP_MM = 4.0  # distance between the two slices of a volume study
BLOCK_MM = 14.0  # volumes are cut into slice blocks of this thickness ...
BLOCK_GAP_MM = 6.0  # ... separated by unused gaps; blocks are dealt to splits with this pattern:
SPLIT_PATTERN = ("train", "test", "train", "val", "train", "test", "train")
MIN_SLICE_AREA = 0.45  # slices whose organ area is at least this fraction of the largest one are used
CARD_MARKER = "<!-- amif demo dataset card -->"
BUILD_VERSION = 3  # bumped when the same seed and scale give a different dataset (amif demo rebuilds)


def _rng(seed: int, *parts: object) -> np.random.Generator:
    key = [int(seed) & 0xFFFFFFFF] + [zlib.crc32(str(p).encode()) for p in parts]
    return np.random.default_rng(key)


def _scaled(counts: tuple[int, int, int], scale: float) -> tuple[int, int, int]:
    return tuple(max(1, int(round(c * scale))) for c in counts)  # type: ignore[return-value]


@dataclass
class Study:
    study_id: str
    split: str
    source: str
    plane: str | None = None
    block: tuple[int, int] | None = None  # volumes: inclusive slice range the study's views come from
    lesions: LesionPlan = LesionPlan(0, None)  # drawn attributes of the study's lesions (schedule.py)


# ------------------------------------------------------------------------------------------ volumes


@dataclass
class PlaneSetup:
    frame: Frame
    ref: tuple[float, float]
    extent: tuple[float, float]
    gap: int  # slices between the two views
    through_mm: float
    blocks: dict[str, list[tuple[int, int]]]


def _projection(vol: src_mod.Volume, plane: str, lo: int, hi: int) -> np.ndarray:
    g = vol.planes[plane]
    sub = np.take(vol.mask, np.arange(lo, hi + 1), axis=g.through).any(axis=g.through)
    rest = [a for a in range(3) if a != g.through]
    sub = sub if rest.index(g.row_axis) == 0 else sub.T
    if g.row_flip:
        sub = sub[::-1]
    if g.col_flip:
        sub = sub[:, ::-1]
    return sub


def plane_setup(vol: src_mod.Volume, plane: str, size: int) -> PlaneSetup:
    """Frame, organ centre / extent, view gap and the split blocks of one plane of a volume."""
    g = vol.planes[plane]
    other = tuple(a for a in range(3) if a != g.through)
    area = vol.mask.sum(axis=other)
    valid = np.flatnonzero(area >= MIN_SLICE_AREA * area.max())
    lo, hi = int(valid[0]), int(valid[-1])
    sr, sc, st = vol.slice_spacing(plane)
    proj = _projection(vol, plane, lo, hi)
    rows, cols = np.flatnonzero(proj.any(1)), np.flatnonzero(proj.any(0))
    box = (rows[0], cols[0], rows[-1] + 1, cols[-1] + 1)
    frame = square_frame(box, (sr, sc), size, margin=0.05)
    top = frame.to_out(box[0] - 0.5, box[1] - 0.5)
    bottom = frame.to_out(box[2] - 0.5, box[3] - 0.5)
    ref = ((top[0] + bottom[0]) / 2, (top[1] + bottom[1]) / 2)
    extent = (bottom[0] - top[0], bottom[1] - top[1])
    gap = max(1, int(round(VIEW_GAP_MM / st)))
    length = hi - lo + 1
    blk = max(gap + 2, int(round(BLOCK_MM / st)))
    bgap = max(2, int(round(BLOCK_GAP_MM / st)))
    k = (length + bgap) // (blk + bgap)
    if k < 4:
        k = 4
        blk = max(gap + 1, (length - 3 * bgap) // 4)
    blocks: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for i in range(k):
        start = lo + i * (blk + bgap)
        blocks[SPLIT_PATTERN[i % len(SPLIT_PATTERN)]].append((start, min(start + blk - 1, hi)))
    return PlaneSetup(frame, ref, extent, gap, st, dict(blocks))


# ------------------------------------------------------------------------------------------ helpers


def _to_png(img: np.ndarray, path: Path) -> None:
    a = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a, mode="RGB" if a.ndim == 3 else "L").save(path, format="PNG", optimize=False)


def _position(row: float, col: float, ref: tuple[float, float], horizontal: str | None,
              vertical: str | None) -> dict[str, str]:
    out: dict[str, str] = {}
    if horizontal == "lr":  # radiological convention: the patient's left is on the image right
        out["lr"] = "left" if col > ref[1] else "right"
    elif horizontal == "ap":  # sagittal: anterior on the image left
        out["ap"] = "anterior" if col < ref[1] else "posterior"
    if vertical == "ud":
        out["ud"] = "upper" if row < ref[0] else "lower"
    elif vertical == "ap":  # axial: anterior at the top
        out["ap"] = "anterior" if row < ref[0] else "posterior"
    return out


def _region_word(info: src_mod.SourceInfo) -> str:
    if info.modality in ("ultrasound", "fundus photograph", "pathology"):
        return "image"
    return "body" if info.organ == "whole body" else info.organ


def _lesion_json(les: les_mod.Lesion, shrink: float, position: dict[str, str], info: src_mod.SourceInfo) -> dict:
    d = {
        "id": les.id,
        "center_px": [round(les.row, 2), round(les.col, 2)],
        "diameter_px": round(les.diameter_px * shrink, 2),
        "diameter_mm": None if les.diameter_mm is None else round(les.diameter_mm, 1),
        "view_diameter_mm": None if les.diameter_mm is None else round(les.diameter_mm * shrink, 1),
        "size": les.size,
        "intensity": les.intensity,
        "intensity_term": les_mod.intensity_term(info.modality, les.intensity),
        "axes_px": [round(les.a * shrink, 2), round(les.b * shrink, 2)],
        "angle": round(les.angle, 4),
        "position": position,
        "side": position.get("lr"),
    }
    return d


# ------------------------------------------------------------------------------------------ build


@dataclass
class RenderedImage:
    image_id: str
    rel_path: str
    study: Study
    view: str
    truth: dict
    extra: dict


class _Builder:
    def __init__(self, out: Path, seed: int, scale: float, size: int, use_invesalius: bool,
                 allow_missing: bool = False):
        self.out, self.seed, self.scale, self.size = out, seed, scale, size
        self.images2d = {s.info.key: s for s in src_mod.load_2d_sources()}
        self.volumes: dict[str, src_mod.Volume] = {}
        self.missing: list[str] = []
        self.fallbacks: list[str] = []  # studies whose planned lesions could not be placed (they get none)
        mni = src_mod.load_mni()
        if mni is not None:
            self.volumes["mni"] = mni
        else:
            self.missing.append("mni (nilearn / nibabel not importable)")
        self.missing += [f"{name.lstrip('_')} (pydicom / pydicom-data / scikit-image file or decoder missing)"
                         for name in src_mod.missing_2d_sources()]
        if self.missing and not allow_missing:  # a missing package must not silently give another dataset
            raise DataError("demo source(s) could not be loaded: " + "; ".join(self.missing)
                            + ". Install the 'demo' extra (make setup), or pass allow_missing_sources=True "
                            "to build without them")
        if use_invesalius:  # opt-in only: an installed Debian package must not change the default build
            inv = src_mod.load_invesalius()
            if inv is None:
                raise DataError("the InVesalius example (invesalius-examples) was requested but not found",
                                path=src_mod.INVESALIUS_CANDIDATES[0])
            self.volumes["inv"] = inv
        if not self.images2d and not self.volumes:
            raise DataError("no demo source could be loaded: install the 'demo' extra "
                            "(pydicom-data, nilearn, scikit-image)")
        self.setups = {(k, p): plane_setup(v, p, size) for k, v in self.volumes.items() for p in src_mod.PLANES}
        organs = {s.info.organ for s in self.images2d.values()}
        organs |= {v.infos[p].organ for v in self.volumes.values() for p in src_mod.PLANES}
        self.organs = tuple(sorted(organs))

    # -- planning
    def plan(self) -> list[Study]:
        """Every study with its split, slice block (volumes) and lesion attributes (balanced per
        source, plane and split by :func:`amif_demo.data.schedule.plan_group`)."""
        studies: list[Study] = []
        for key in ("mni", "inv"):
            if key not in self.volumes:
                continue
            for plane in src_mod.PLANES:
                setup = self.setups[(key, plane)]
                counts = _scaled(VOLUME_STUDIES[key], self.scale)
                i = 0
                for split, n in zip(SPLITS, counts):
                    rng = _rng(self.seed, "plan", key, plane, split)
                    blocks = setup.blocks[split]
                    plans = plan_group(_rng(self.seed, "schedule", key, plane, split), n)
                    for lp in plans:
                        b = blocks[int(rng.integers(len(blocks)))]
                        studies.append(Study(f"{key}-{plane[:3]}-{i:04d}", split, key, plane, b, lp))
                        i += 1
        for key, s in self.images2d.items():
            counts = _scaled(IMAGE_STUDIES if s.info.lesions else RECOGNITION_STUDIES, self.scale)
            i = 0
            for split, n in zip(SPLITS, counts):
                for lp in plan_group(_rng(self.seed, "schedule", key, split), n, lesions=s.info.lesions):
                    studies.append(Study(f"{key}-{i:04d}", split, key, lesions=lp))
                    i += 1
        return studies

    # -- one study
    def render_study(self, st: Study) -> list[RenderedImage]:
        rng = _rng(self.seed, "study", st.study_id)
        if st.plane is not None:
            return self._render_volume_study(st, rng)
        return self._render_image_study(st, rng)

    def _render_volume_study(self, st: Study, rng: np.random.Generator) -> list[RenderedImage]:
        vol = self.volumes[st.source]
        plane = st.plane
        assert plane is not None and st.block is not None
        setup = self.setups[(st.source, plane)]
        info = vol.infos[plane]
        lesions, specs = None, None
        # a failed placement moves the slice pair (then relaxes the constraints), never the attributes
        for relax, _ in itertools.product(range(len(les_mod.RELAX_LEVELS)), range(SLICE_TRIES)):
            s0 = int(rng.integers(st.block[0], max(st.block[0], st.block[1] - setup.gap) + 1))
            views = [s0, s0 + setup.gap]
            imgs, masks = [], []
            for s in views:
                im, m = vol.slice(plane, s)
                imgs.append(resample(im, setup.frame))
                masks.append(resample_mask(m, setup.frame))
            placement = les_mod.Placement(
                mask=masks[0] & masks[1], lum=imgs[0], mm_per_px=setup.frame.mm_per_px,
                modality=info.modality, horizontal=info.horizontal, vertical=info.vertical,
                ref=setup.ref, extent=setup.extent, min_shrink=0.9,
            )
            if specs is None:
                specs = les_mod.draw_specs(rng, st.lesions, les_mod.available_sizes(placement))
            centre = (views[0] + views[1]) / 2.0
            lesions = self._place(rng, placement, st, specs, volume=True, centre_slice=centre, relax=relax)
            if lesions is not None:
                break
        if lesions is None:  # no room for the planned lesions in any slice pair tried: none (counted)
            lesions = []
            self.fallbacks.append(st.study_id)
        sizes_offered = len(les_mod.available_sizes(placement)) >= 2
        out = []
        for k, (s, im) in enumerate(zip(views, imgs)):
            shrinks = [les.scale_at((s - centre) * setup.through_mm) for les in lesions]
            drawn = les_mod.draw_lesions(im, lesions, info.modality, shrinks)
            view = f"view{k + 1}"
            extra = {"source": st.source, "slice": s, "slice_pair": views, "single_view": False,
                     "lesion_plan": st.lesions.as_dict()}
            out.append(self._finish(st, info, drawn, lesions, shrinks, setup.frame, setup.ref, view, extra,
                                    sizes_offered, vol=vol))
        return out

    @staticmethod
    def _place(rng: np.random.Generator, placement: les_mod.Placement, st: Study, specs: list,
               **kw) -> list[les_mod.Lesion] | None:
        # a single lesion's candidate centres do not depend on the draw: one try tells whether it fits
        for _ in range(10 if st.lesions.n > 1 else 1):
            found = les_mod.place_lesions(rng, placement, st.lesions, specs, st.study_id, **kw)
            if found is not None:
                return found
        return None

    def _frame_2d(self, src: src_mod.Image2D, rng: np.random.Generator):
        zoom = float(rng.uniform(1.0, 1.12))
        shift = (float(rng.uniform(-0.03, 0.03)), float(rng.uniform(-0.03, 0.03)))
        sp = src.spacing or 1.0
        frame = square_frame(src.crop, (sp, sp), self.size, zoom=zoom, shift=shift, has_mm=src.spacing is not None)
        img = resample(src.image, frame)
        mask = resample_mask(src.mask, frame)
        border = max(2, self.size // 48)
        mask[:border] = mask[-border:] = False
        mask[:, :border] = mask[:, -border:] = False
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        if rows.size:
            ref = ((rows[0] + rows[-1]) / 2.0, (cols[0] + cols[-1]) / 2.0)
            extent = (float(rows[-1] - rows[0] + 1), float(cols[-1] - cols[0] + 1))
        else:
            ref, extent = (self.size / 2.0, self.size / 2.0), (float(self.size), float(self.size))
        jitter = {"zoom": round(zoom, 4), "shift": [round(x, 4) for x in shift]}
        return frame, img, mask, ref, extent, jitter

    def _render_image_study(self, st: Study, rng: np.random.Generator) -> list[RenderedImage]:
        src = self.images2d[st.source]
        info = src.info
        lesions: list[les_mod.Lesion] = []
        sizes_offered = False
        specs = None
        tries = itertools.product(range(len(les_mod.RELAX_LEVELS)), range(FRAME_TRIES)) if info.lesions else [(0, 0)]
        for relax, _ in tries:  # a failed placement re-frames the image (then relaxes), never redraws attributes
            frame, img, mask, ref, extent, jitter = self._frame_2d(src, rng)
            if not info.lesions:
                break
            placement = les_mod.Placement(
                mask=mask, lum=img if img.ndim == 2 else img.mean(-1), mm_per_px=frame.mm_per_px,
                modality=info.modality, horizontal=info.horizontal, vertical=info.vertical, ref=ref, extent=extent,
            )
            sizes = les_mod.available_sizes(placement)
            sizes_offered = len(sizes) >= 2
            if specs is None:
                specs = les_mod.draw_specs(rng, st.lesions, sizes)
            found = self._place(rng, placement, st, specs, relax=relax)
            if found is not None:
                lesions = found
                break
        else:
            self.fallbacks.append(st.study_id)
        img = les_mod.draw_lesions(img, lesions, info.modality)
        extra = {"source": st.source, "single_view": True, "jitter": jitter, "lesion_plan": st.lesions.as_dict()}
        return [self._finish(st, info, img, lesions, [1.0] * len(lesions), frame, ref, "single", extra,
                             sizes_offered)]

    def _finish(self, st: Study, info: src_mod.SourceInfo, img: np.ndarray, lesions: list[les_mod.Lesion],
                shrinks: list[float], frame: Frame, ref: tuple[float, float], view: str, extra: dict,
                sizes_offered: bool, vol: src_mod.Volume | None = None) -> RenderedImage:
        image_id = st.study_id if view == "single" else f"{st.study_id}-{view[-1]}"
        rel = f"images/{st.source}/{image_id}.png"
        _to_png(img, self.out / rel)
        les_json = []
        for les, shrink in zip(lesions, shrinks):
            pos = _position(les.row, les.col, ref, info.horizontal, info.vertical)
            d = _lesion_json(les, shrink, pos, info)
            if vol is not None and st.plane is not None and les.centre_slice is not None:
                nat_r, nat_c = frame.to_native(les.row, les.col)
                d["center_voxel"] = [round(v, 2) for v in vol.display_to_voxel(st.plane, les.centre_slice,
                                                                                  nat_r, nat_c)]
            les_json.append(d)
        position = les_json[0]["position"] if len(les_json) == 1 else {}
        truth = {
            "modality": info.modality, "organ": info.organ, "plane": info.plane, "view_desc": info.view_desc,
            "lesion_questions": info.lesions, "lesions": les_json, "position": position,
            "region": _region_word(info),
            "size": les_json[0]["size"] if (len(les_json) == 1 and sizes_offered) else None,
        }
        extra.update({
            "modality": info.modality, "organ": info.organ, "plane": info.plane, "view": view,
            "mm_per_px": None if frame.mm_per_px is None else round(frame.mm_per_px, 4),
            "reference_px": [round(ref[0], 2), round(ref[1], 2)],
            "axes": {"horizontal": info.horizontal, "vertical": info.vertical},
            "frame": frame.as_dict(),
            "n_lesions": len(les_json) if info.lesions else None,
            "lesions": les_json,
            "size_question": bool(truth["size"] is not None),
        })
        return RenderedImage(image_id, rel, st, view, truth, extra)


def _questions_for(seed: int, r: RenderedImage, organs: tuple[str, ...]) -> list[qmod.Candidate]:
    rng = _rng(seed, "questions", r.image_id)
    t = r.truth
    lesions = t["lesions"]
    truth = qmod.Truth(
        modality=t["modality"], organ=t["organ"], plane=t["plane"], lesion_questions=t["lesion_questions"],
        n=len(lesions), intensity=lesions[0]["intensity"] if lesions else None, position=t["position"],
        size=t["size"], region=t["region"],
    )
    out = qmod.recognition_questions(rng, truth, organs) + qmod.lesion_questions(rng, truth)
    for c in out:  # position answers are balanced per source and plane too, not only per wording
        if c.question_type == "position":
            c.group = f"{c.group}/{r.study.source}/{t['plane']}"
    return out


def _iter(items, progress: bool, desc: str):
    if not progress:
        return items
    try:
        from tqdm import tqdm

        return tqdm(items, desc=desc, unit="study")
    except Exception:
        return _print_progress(items, desc)


def _print_progress(items, desc: str):
    total = len(items)
    step = max(1, total // 10)
    for i, x in enumerate(items, start=1):
        yield x
        if i % step == 0 or i == total:
            print(f"{desc}: {i}/{total} studies", flush=True)


def _prepare_out(out: Path) -> None:
    if out.exists() and any(out.iterdir()):
        card = out / "README.md"
        ours = card.is_file() and CARD_MARKER in card.read_text(encoding="utf-8", errors="replace")
        if not ours:
            raise DataError("output folder exists and is not empty (and is not a previous demo build)", path=out)
        for name in ("images",):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
        for f in out.glob("*.jsonl"):
            f.unlink()
    out.mkdir(parents=True, exist_ok=True)


def build_demo_dataset(
    out_dir: str | Path,
    *,
    seed: int = 0,
    scale: float = 1.0,
    image_size: int = 192,
    progress: bool = True,
    use_invesalius: bool = False,
    allow_missing_sources: bool = False,
) -> dict:
    """Build the demo Med-VQA dataset into ``out_dir`` and return a summary.

    ``scale`` multiplies the number of studies (at least one per source, plane and split remains).
    ``use_invesalius``: False (default) builds from the pip-installed sources only, whatever else
    the machine has; True adds the InVesalius head CT of the Debian package invesalius-examples and
    fails when it is not installed. A default source that does not load is an error unless
    ``allow_missing_sources``. The same seed, scale and source packages give identical files.
    """
    from amif_demo.data.card import write_card

    if scale <= 0:
        raise DataError(f"scale must be positive, got {scale}")
    if image_size < 64:
        raise DataError(f"image_size must be at least 64, got {image_size}")
    t0 = time.time()
    out = Path(out_dir)
    _prepare_out(out)
    b = _Builder(out, seed, scale, image_size, use_invesalius, allow_missing_sources)
    studies = b.plan()
    rendered: list[RenderedImage] = []
    for st in _iter(studies, progress, "demo dataset"):
        rendered.extend(b.render_study(st))

    # questions, balanced per split and answer group
    items: list[tuple[str, qmod.Candidate]] = []
    owners: list[int] = []
    for i, r in enumerate(rendered):
        for c in _questions_for(seed, r, b.organs):
            items.append((r.study.split, c))
            owners.append(i)
    keep = qmod.balance(items, _rng(seed, "balance"))
    vqa: dict[str, list[VQARecord]] = {s: [] for s in SPLITS}
    per_image: Counter = Counter()
    for (split, c), i, k in zip(items, owners, keep):
        if not k:
            continue
        r = rendered[i]
        j = per_image[r.image_id]
        per_image[r.image_id] += 1
        extra = dict(r.extra)
        extra["image_dependent"] = c.question_type in qmod.LESION_TYPES
        extra["seen_source"] = bool(r.extra.get("single_view")) and c.question_type in qmod.RECOGNITION_TYPES
        vqa[split].append(VQARecord(
            qid=f"{r.image_id}-q{j}", image=r.rel_path, question=c.question, answer=c.answer, split=split,
            answer_type=c.answer_type, question_type=c.question_type, study_id=r.study.study_id, extra=extra,
        ))
    caps: dict[str, list[CaptionRecord]] = {s: [] for s in SPLITS}
    for r in rendered:
        def caption_rng(image_id: str = r.image_id) -> np.random.Generator:
            return _rng(seed, "caption", image_id)

        text = cap.caption(caption_rng(), r.study.source, r.truth)
        cap_extra = {
            "single_view": bool(r.extra.get("single_view")), "source": r.study.source,
            "modality": r.truth["modality"], "organ": r.truth["organ"], "plane": r.truth["plane"],
            "n_lesions": r.extra["n_lesions"], "lesions": r.extra["lesions"],
        }
        twins = cap.negative_captions(caption_rng, r.study.source, r.truth)
        if twins:
            cap_extra["negative_captions"] = twins
        caps[r.study.split].append(CaptionRecord(
            id=r.image_id, image=r.rel_path, caption=text, split=r.study.split, study_id=r.study.study_id,
            view=r.view, extra=cap_extra,
        ))
    for split in SPLITS:
        write_records(out / f"{split}.jsonl", vqa[split])
        write_records(out / f"captions_{split}.jsonl", caps[split])

    summary = _summary(out, seed, scale, image_size, b, studies, rendered, vqa, caps)
    write_card(out / "README.md", summary, b, CARD_MARKER)
    summary["seconds"] = round(time.time() - t0, 1)
    return summary


def _summary(out: Path, seed: int, scale: float, size: int, b: _Builder, studies: list[Study],
             rendered: list[RenderedImage], vqa: dict, caps: dict) -> dict:
    qt: dict[str, dict[str, int]] = {}
    at: dict[str, dict[str, int]] = {}
    answers: dict[str, dict[str, int]] = defaultdict(Counter)
    for split in SPLITS:
        qt[split] = dict(sorted(Counter(r.question_type for r in vqa[split]).items()))
        at[split] = dict(sorted(Counter(r.answer_type for r in vqa[split]).items()))
        for r in vqa[split]:
            answers[f"{r.question_type}/{r.answer_type}"][r.answer] += 1
    sources = sorted({r.study.source for r in rendered})
    return {
        "out_dir": str(out),
        "seed": seed,
        "scale": scale,
        "image_size": size,
        "build_version": BUILD_VERSION,
        "sources": sources,
        "source_details": _source_details(b, sources),
        "missing_sources": list(b.missing),
        "studies": {s: sum(1 for st in studies if st.split == s) for s in SPLITS},
        "images": {s: sum(1 for r in rendered if r.study.split == s) for s in SPLITS},
        "questions": {s: len(vqa[s]) for s in SPLITS},
        "captions": {s: len(caps[s]) for s in SPLITS},
        "question_types": qt,
        "answer_types": at,
        "answers": {k: dict(sorted(v.items(), key=lambda kv: (-kv[1], kv[0]))) for k, v in sorted(answers.items())},
        "images_per_source": dict(sorted(Counter(r.study.source for r in rendered).items())),
        "placement_fallbacks": len(b.fallbacks),
        "placement_fallback_studies": list(b.fallbacks),
        "count_probabilities": list(COUNT_PROBS),
    }


def _package_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _source_details(b: _Builder, used: list[str]) -> dict[str, dict]:
    """Title, origin, package (and its installed version) of every source the build used."""
    infos = {s.info.key: s.info for s in b.images2d.values()}
    infos.update({k: v.infos["axial"] for k, v in b.volumes.items()})
    out = {}
    for key in used:
        info = infos[key]
        names = [x.strip().split(" ")[0] for x in info.package.split("/")]
        out[key] = {"title": info.title, "origin": info.origin, "package": info.package,
                    "versions": {n: _package_version(n) for n in names if _package_version(n)}}
    return out


def view_mask(extra: dict, image_size: int | None = None) -> np.ndarray:
    """The organ mask of a built image, recomputed from its record's ``extra`` (for checks and tests)."""
    f = Frame(**extra["frame"])
    src = extra["source"]
    if extra.get("plane") is not None and src in ("mni", "inv"):
        vol = src_mod.load_mni() if src == "mni" else src_mod.load_invesalius()
        if vol is None:
            raise DataError(f"source {src!r} is not available on this machine")
        _, m = vol.slice(extra["plane"], int(extra["slice"]))
        return resample_mask(m, f)
    for s in src_mod.load_2d_sources():
        if s.info.key == src:
            return resample_mask(s.mask, f)
    raise DataError(f"source {src!r} is not available on this machine")


__all__ = ["build_demo_dataset", "view_mask"]
