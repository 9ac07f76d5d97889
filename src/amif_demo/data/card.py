"""The dataset card (``README.md``) of a built demo dataset."""

from __future__ import annotations

from pathlib import Path

from amif.data.records import SPLITS
from amif_demo.data.lesions import INTENSITY_TERMS, MIN_FOV_FRACTION, SIZE_EDGES_MM, SIZE_SAMPLE_MM

_TYPE_ORDER = ("modality", "organ", "plane", "presence", "count", "position", "size", "intensity")

_LICENCES = """\
| source | package | licence / terms |
|---|---|---|
| MNI152 ICBM 2009a T1 template | nilearn (BSD-3-Clause) | template: copyright 1993-2009 Louis Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University; use, copying and distribution are permitted for any purpose without fee provided the copyright notice is kept; no warranty (Fonov et al., NeuroImage 2011; Collins et al. 1999). nilearn's own description lists the licence as "unknown"; the notice above is the one distributed with the ICBM 2009 templates. |
| DICOM samples (CT_small.dcm) | pydicom (MIT) | test files distributed with pydicom |
| DICOM samples (693_UNCI, RG1_UNCI, RG3_UNCI, MR2_UNCI, US1_UNCI, MR-SIEMENS-DICOM-WithOverlays, gdcm-US-ALOKA-16, JPEG2000_UNC) | pydicom-data (MIT) | public DICOM test data (NEMA / DICOM sample images, GDCM test data) redistributed under the package's MIT licence |
| retina | scikit-image (BSD-3-Clause) | image: CC0 1.0 (Wikimedia Commons, "Fundus photograph of normal left eye", M. Haggstrom) |
| immunohistochemistry | scikit-image (BSD-3-Clause) | image: no known copyright restrictions (Center for Microscopy And Molecular Imaging) |
| Cranium.inv3 (optional) | Debian invesalius-examples | GPL-2 (InVesalius, CTI Renato Archer) |
"""


def _table(rows: list[list[str]], header: list[str]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _sources_table(builder, summary: dict) -> str:
    counts = summary["images_per_source"]
    rows = []
    infos = [s.info for s in builder.images2d.values()]
    infos += [v.infos["axial"] for v in builder.volumes.values()]
    for info in infos:
        if info.key not in counts:
            continue
        use = "lesions + all question types" if info.lesions else "recognition questions only"
        view = "axial, coronal, sagittal" if info.key in builder.volumes else (info.plane or info.view_desc or "-")
        versions = summary.get("source_details", {}).get(info.key, {}).get("versions", {})
        pkg = ", ".join(f"{n} {v}" for n, v in versions.items()) or info.package
        rows.append([f"`{info.key}`", info.title, pkg, info.modality, info.organ, view, str(counts[info.key]), use,
                     info.note or "-"])
    return _table(rows, ["key", "source", "package", "modality", "organ", "plane / view", "images", "used for",
                         "note"])


def write_card(path: Path, summary: dict, builder, marker: str) -> None:
    """Write the dataset card; deterministic for a given build (no timings or absolute paths)."""
    qt = summary["question_types"]
    types = [t for t in _TYPE_ORDER if any(t in qt[s] for s in SPLITS)]
    type_rows = [[t] + [str(qt[s].get(t, 0)) for s in SPLITS] for t in types]
    at = summary["answer_types"]
    at_rows = [[a] + [str(at[s].get(a, 0)) for s in SPLITS] for a in ("OPEN", "CLOSED")]
    count_rows = [[k] + [str(summary[k][s]) for s in SPLITS] for k in ("studies", "images", "questions", "captions")]
    ans_rows = []
    for key, hist in summary["answers"].items():
        items = ", ".join(f"{a} ({n})" for a, n in hist.items())
        ans_rows.append([key, items])
    small_lo = SIZE_SAMPLE_MM["small"][0]
    terms = "; ".join(f"{m}: {a} / {b}" for m, (a, b) in INTENSITY_TERMS.items())
    missing = summary["missing_sources"]
    probs = " / ".join(f"{p * 100:.0f}%" for p in summary["count_probabilities"])
    text = f"""{marker}
# amif demo Med-VQA dataset

A small, fully reproducible medical VQA dataset built offline by `amif data demo` from **real anatomy
shipped in pip packages** (nilearn, pydicom, pydicom-data, scikit-image; the Debian package
invesalius-examples only when asked for) with **synthetic focal lesions** drawn on top. It exists to show that the AMiF
pipeline runs end to end and that its answers depend on the image. It is **not** a clinical dataset:
every lesion is synthetic, and a model trained on it learns nothing of clinical value.

Build: seed {summary['seed']}, scale {summary['scale']}, images {summary['image_size']} x {summary['image_size']} px (8-bit PNG).
Sources used: {', '.join(summary['sources'])}.{' Sources missing on the building machine (this is NOT the default dataset): ' + '; '.join(missing) + '.' if missing else ''}

## Files

- `train.jsonl`, `val.jsonl`, `test.jsonl`: VQA records (`amif.data.records.VQARecord`), one question each.
- `captions_train.jsonl`, `captions_val.jsonl`, `captions_test.jsonl`: one caption per image (`CaptionRecord`).
  Volume studies have two views (`view1`, `view2`: two slices 4 mm apart through the same 3D lesions);
  a 2D source gives a single view (`view` = `single`, `extra.single_view` = true): a pre-training loader
  should make its two views by augmenting that image twice.
- `images/<source>/<image>.png`.

Every record has `study_id` (all images, questions and lesions of a study share it) and ground truth in
`extra`: `modality`, `organ`, `plane`, `source`, `mm_per_px`, `lesions` (id, `center_px` [row, col],
`diameter_mm` of the lesion, `view_diameter_mm` of its cut in this image, `size`, `intensity`,
`intensity_term`, `position`), `reference_px` (the organ's centre lines used for position answers),
`axes`, `frame`, `image_dependent` (lesion questions) and `seen_source` (recognition questions on a
single-image source, see the caveats).

## Counts

{_table(count_rows, ['', *SPLITS])}

Questions per type:

{_table(type_rows, ['question_type', *SPLITS])}

Answer types:

{_table(at_rows, ['answer_type', *SPLITS])}

Images per source: {', '.join(f'{k} {v}' for k, v in summary['images_per_source'].items())}.

## Sources

{_sources_table(builder, summary)}

## Licences

{_LICENCES}
The built dataset is derived from these images; keep these notices when you share it. If the
optional InVesalius CT is included (GPL-2), share the result under terms compatible with GPL-2.

## Question types and answers

- `modality` (open: ct, mri, x-ray, ultrasound, nuclear medicine, fundus photograph, pathology; closed: yes/no).
- `organ` (open: the organ of the source; closed: yes/no).
- `plane` (cross-sections with a known plane only; open: axial, coronal, sagittal; closed: yes/no).
- `presence` (closed: yes/no; "Is this image normal?" is answered yes when there is no lesion).
- `count` (open: 0, 1, 2, 3; closed: yes/no).
- `position` (single lesion only): `left` / `right` (the patient's side), `upper` / `lower`,
  `anterior` / `posterior`, as the plane allows; closed yes/no forms.
- `size` (single lesion, sources with a real pixel spacing that offer at least two size classes):
  `small` (< {SIZE_EDGES_MM[0]:.0f} mm), `medium` ({SIZE_EDGES_MM[0]:.0f}-{SIZE_EDGES_MM[1]:.0f} mm), `large` (>= {SIZE_EDGES_MM[1]:.0f} mm); closed:
  "larger than 35 mm?", "smaller than 2 cm?", "at least 20 mm across?".
- `intensity`: the modality's term ({terms}) or brighter / darker; closed yes/no forms.

Answers seen per type and answer type (all splits):

{_table(ans_rows, ['type / answer type', 'answers (count)'])}

**Balance.** Within every split, every closed question group and every open lesion-question group
(presence, count, position per axis, size, intensity per term pair) keeps the same number of questions
for each answer, and so does every single question wording within those groups (questions of the more
frequent answers are dropped at random; a wording lacking one of its group's answers is dropped), so no
wording carries an answer prior. A model that reads only
the question is close to chance on the lesion questions (on the default build, the most frequent
training answer per question text scores about 0.5 on the test lesion questions, the chance level of
this mix of yes/no, 2-, 3- and 4-way questions). The open modality-specific intensity terms of
ultrasound, radiographs and scintigraphy are rare for the same reason (few images, balanced per split). Open modality / organ / plane answers follow the
image mix and are not balanced.

## Conventions

- **Radiological convention.** Axial and coronal images are displayed with the patient's left on the
  image right (anterior at the top of axial images, superior at the top of coronal ones). Sagittal
  images have anterior on the image left and superior at the top. The PA chest radiograph follows the same
  left / right rule (its DICOM patient orientation is L, F); the bone scan does not say whether it is an
  anterior or a posterior view, so it gets no left / right questions. Position answers use the patient's side:
  "left" means the patient's left, i.e. the right half of the image.
- Positions are relative to the **organ's centre lines** (the centre of the bounding box of the brain /
  body / lung mask in this plane, `extra.reference_px`), not the image centre. Single lesions keep at
  least {int(0.1 * 100)}% of the organ's extent away from these lines, so sides are never ambiguous.
  Ultrasound, fundus and pathology images only get upper / lower questions, about the image; the oblique
  shoulder MR and the bone scan get upper / lower only; sagittal slices get anterior / posterior and
  upper / lower, axial slices left / right and anterior / posterior, coronal slices left / right and
  upper / lower.
- Sizes are the lesion's diameter in millimetres from the file's pixel spacing (after resizing, see
  `extra.mm_per_px`). Drawn diameters avoid the class edges ({small_lo:.0f}-17, 23-31 and 39-50 mm, the lower
  bounds raised per source so that a lesion stays visible) and are at least {MIN_FOV_FRACTION * 100:.0f}% of the field of view, so a lesion is at least ~{MIN_FOV_FRACTION * 96:.0f} px across in a 96 px
  model input. Sources without a usable pixel spacing (chest radiograph, fundus, pathology, whole-body bone scan) have
  no size questions and no millimetres in their captions.

## How lesions are made

Each study draws a lesion count (0, 1, 2, 3 with probabilities {probs}; single lesions are a bit more
frequent because only they get position and size questions), one intensity for all its lesions (brighter / darker,
50/50), and per lesion a size, an elongation (axis ratio 0.8-1.25), an orientation, a slight lobulation and
a texture seed. Centres are sampled inside the organ mask (thresholds + morphology + largest component;
the MNI brain mask; the intracranial soft tissue of head CTs; the lungs of the chest radiograph) at a
distance from its edge of at least 0.8 times the lesion radius, without overlaps, and where the tissue
leaves room for the chosen contrast. For a single lesion the side (left / right, upper / lower) is drawn
first, which balances position answers. Drawing depends on the modality: a soft-edged textured blob
(CT and MR: +0.42 / -0.36 of the display range from the local tissue level, keeping a quarter of the
underlying texture), speckled for ultrasound, a projected sphere for
radiographs, a blurred hot / cold spot for scintigraphy, colour blends for fundus (exudate-like / haemorrhage-like)
and pathology (pale area / dense haematoxylin cluster). In volumes a lesion is an ellipsoid in
voxel space; both views of a study cut it, so both show the same lesions (the further cut slightly
smaller; `view_diameter_mm`).

## Splits

- Studies never cross splits and lesion ids (`<study_id>-L<k>`) are unique to their study.
- Volumes (MNI152, InVesalius CT) are cut, per plane, into slice blocks of {14} mm separated by {6} mm
  gaps; blocks are dealt to train / test / val in an interleaved pattern, so validation and test slices
  are anatomy that no training image shows (a different level of the same brain / head).
- **Seen-source caveat.** Each 2D source (head CT 693_UNCI, CT_small, chest radiograph, shoulder MR,
  pelvic ultrasound, bone scan, fundus, pathology, and the recognition-only sources) is a single real
  image: all its studies, in every split, are the same anatomy with a different random framing
  (zoom 1-1.12, shift +/-3%) and different lesions. Their modality / organ / plane questions are therefore
  recognition of a source seen in training (`extra.seen_source` = true), and are easy. The lesion questions
  (`extra.image_dependent` = true) are the ones that measure whether a model looks at the image; report
  them separately (the per-`question_type` breakdown does).

## Caveats

- Synthetic lesions are simple shapes with plausible contrast and texture, not real pathology.
- Some real images contain real findings: the abdominal MR (a liver lesion marked by the file's overlay)
  and the leg radiograph (a non-ossifying fibroma) are used only for modality / organ / plane questions.
  Other images may contain incidental real findings; "presence" and "count" refer to the synthetic lesions.
- The MNI152 template is an average of many brains (smooth, symmetric); the head CT 693_UNCI is a lossy
  sample with blocky grey matter; CT_small is a 128 px crop around a thoracic vertebra (organ: spine).
- The chest radiograph file has a zero pixel spacing, the fundus and micrograph have none, and on the 2 m
  field of view of the whole-body scan no size class would be visible: their lesion sizes are in pixels only.
- The InVesalius `matrix.dat` stores the DICOM rows upside down (checked on the anatomy); its columns are
  assumed to run as in DICOM (towards the patient's left), which cannot be checked on a symmetric head.
"""
    path.write_text(text, encoding="utf-8")
