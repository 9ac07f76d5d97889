"""Question templates in the VQA-RAD / SLAKE style, answers from the generated ground truth, balancing.

Question types: ``modality``, ``organ``, ``plane`` (recognition of the source and the cut) and
``presence``, ``count``, ``position``, ``size``, ``intensity`` (about the synthetic lesions; these need
the image). Each type has open and closed (yes / no) forms and several phrasings. After generation,
:func:`balance` drops questions so that, within every split and answer group, each answer is equally
frequent for every wording: a model that reads only the question cannot beat chance on the lesion
types (nor on the closed recognition questions).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from amif_demo.data.lesions import INTENSITY_TERMS, intensity_term

MODALITIES = ("ct", "mri", "x-ray", "ultrasound", "nuclear medicine", "fundus photograph", "pathology")
PLANES = ("axial", "coronal", "sagittal")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
LESION_TYPES = ("presence", "count", "position", "size", "intensity")
RECOGNITION_TYPES = ("modality", "organ", "plane")

_MODALITY_NP = {
    "ct": "a CT scan", "mri": "an MRI scan", "x-ray": "an X-ray", "ultrasound": "an ultrasound image",
    "nuclear medicine": "a nuclear medicine scan", "fundus photograph": "a fundus photograph",
    "pathology": "a pathology image",
}
_MODALITY_SHORT = {
    "ct": "CT", "mri": "MRI", "x-ray": "X-ray", "ultrasound": "ultrasound",
    "nuclear medicine": "scintigraphy", "fundus photograph": "fundus photography", "pathology": "microscopy",
}
_ORGAN_NP = {"whole body": "the whole body", "lymph node": "a lymph node"}
_INTENSITY_OPEN = {
    "ct": ["Is the {l} hyperdense or hypodense?", "What is the density of the {l}?"],
    "mri": ["Is the {l} hyperintense or hypointense?", "What is the signal intensity of the {l}?"],
    "ultrasound": ["Is the {l} hyperechoic or hypoechoic?", "What is the echogenicity of the {l}?"],
    "x-ray": ["Is the {l} radiopaque or radiolucent?"],
    "nuclear medicine": ["Does the {l} show increased or decreased uptake?"],
}


@dataclass
class Truth:
    """What the questions of one image may ask about."""

    modality: str
    organ: str
    plane: str | None
    lesion_questions: bool  # False for recognition-only sources
    n: int = 0
    intensity: str | None = None  # "brighter" / "darker"
    position: dict[str, str] = field(default_factory=dict)  # axis ("lr", "ud", "ap") -> answer (single lesion)
    size: str | None = None  # size class of the single lesion when the source offers several classes
    region: str = "image"  # what "upper part of the ..." refers to


@dataclass
class Candidate:
    question: str
    answer: str
    answer_type: str
    question_type: str
    group: str  # balancing group ("" = not balanced)


def _organ_np(organ: str) -> str:
    return _ORGAN_NP.get(organ, f"the {organ}")


def _pick(rng: np.random.Generator, items):
    return items[int(rng.integers(len(items)))]


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _other(rng: np.random.Generator, truth: str, pool) -> str:
    return _pick(rng, [x for x in pool if x != truth])


def recognition_questions(rng: np.random.Generator, t: Truth, organs: tuple[str, ...],
                          p_ask: float = 0.6) -> list[Candidate]:
    """Modality, organ and plane questions, each asked with probability ``p_ask`` (open or closed)."""
    out: list[Candidate] = []
    ask = [rng.random() < p_ask for _ in range(3)]
    # modality
    if not ask[0]:
        pass
    elif rng.random() < 0.5:
        q = _pick(rng, ["What imaging modality is this?", "What modality was used to take this image?",
                        "How was this image taken?", "What type of image is this?"])
        out.append(Candidate(q, t.modality, "OPEN", "modality", ""))
    else:
        asked = t.modality if rng.random() < 0.5 else _other(rng, t.modality, MODALITIES)
        q = _pick(rng, ["Is this {np}?", "Is this image {np}?", "Was this image taken with {short}?"])
        q = q.format(np=_MODALITY_NP[asked], short=_MODALITY_SHORT[asked])
        out.append(Candidate(q, _yes_no(asked == t.modality), "CLOSED", "modality", "modality-closed"))
    # organ
    if not ask[1]:
        pass
    elif rng.random() < 0.5:
        q = _pick(rng, ["Which organ is shown in this image?", "What part of the body is imaged?",
                        "What organ is this?", "Which body part is shown?"])
        out.append(Candidate(q, t.organ, "OPEN", "organ", ""))
    else:
        asked = t.organ if rng.random() < 0.5 else _other(rng, t.organ, organs)
        q = _pick(rng, ["Is this an image of {o}?", "Does this image show {o}?", "Is {o} shown here?"])
        out.append(Candidate(q.format(o=_organ_np(asked)), _yes_no(asked == t.organ), "CLOSED", "organ",
                             "organ-closed"))
    # plane (cross-sections only)
    if t.plane is not None and ask[2]:
        if rng.random() < 0.5:
            q = _pick(rng, ["In which plane is this image taken?", "What plane is this image in?",
                            "Which imaging plane is shown?", "What is the plane of this slice?"])
            out.append(Candidate(q, t.plane, "OPEN", "plane", ""))
        else:
            asked = t.plane if rng.random() < 0.5 else _other(rng, t.plane, PLANES)
            q = _pick(rng, ["Is this an {p} slice?", "Is this image in the {p} plane?",
                            "Was this image taken in the {p} plane?"])
            q = q.format(p=asked).replace("an coronal", "a coronal").replace("an sagittal", "a sagittal")
            out.append(Candidate(q, _yes_no(asked == t.plane), "CLOSED", "plane", "plane-closed"))
    return out


def lesion_questions(rng: np.random.Generator, t: Truth) -> list[Candidate]:
    if not t.lesion_questions:
        return []
    out: list[Candidate] = []
    n = t.n
    # presence (closed)
    q = _pick(rng, ["Is there a lesion in this image?", "Is there an abnormality in this image?",
                    "Are there any focal lesions?", "Does this image show a lesion?", "Is any abnormality present?",
                    "Is this image normal?"])
    ans = _yes_no(n == 0) if q == "Is this image normal?" else _yes_no(n > 0)
    out.append(Candidate(q, ans, "CLOSED", "presence", "presence"))
    # count
    if rng.random() < 0.6:
        q = _pick(rng, ["How many lesions are there?", "How many lesions are seen?",
                        "How many abnormalities are visible?", "What is the number of lesions?"])
        out.append(Candidate(q, str(n), "OPEN", "count", "count-open"))
    else:
        if rng.random() < 0.35:
            q = _pick(rng, ["Is there more than one lesion?", "Are there multiple lesions?"])
            out.append(Candidate(q, _yes_no(n > 1), "CLOSED", "count", "count-closed"))
        else:
            k = n if (n > 0 and rng.random() < 0.5) else int(rng.integers(1, 4))
            q = "Is there exactly one lesion?" if k == 1 else f"Are there {COUNT_WORDS[k]} lesions?"
            out.append(Candidate(q, _yes_no(k == n), "CLOSED", "count", "count-closed"))
    if n == 0:
        return out
    one = n == 1
    les = "lesion" if one else "lesions"
    # intensity (all lesions of a study share it)
    if t.intensity is not None:
        term_pair = INTENSITY_TERMS[t.modality]
        specific = _INTENSITY_OPEN.get(t.modality)
        if rng.random() < 0.6:
            if specific and rng.random() < 0.6:
                q = _pick(rng, specific).format(l=les)
                if not one:
                    q = q.replace("Is the lesions", "Are the lesions").replace("Does the lesions", "Do the lesions")
                out.append(Candidate(q, intensity_term(t.modality, t.intensity), "OPEN", "intensity",
                                     f"intensity-open-{'/'.join(term_pair)}"))
            else:
                q = ("Is the lesion brighter or darker than the surrounding tissue?" if one
                     else "Are the lesions brighter or darker than the surrounding tissue?")
                out.append(Candidate(q, t.intensity, "OPEN", "intensity", "intensity-open-brighter/darker"))
        else:
            asked = "brighter" if rng.random() < 0.5 else "darker"
            if specific and rng.random() < 0.6:
                word = intensity_term(t.modality, asked)
                if t.modality == "nuclear medicine":
                    q = f"Does the {les} show {word}?" if one else f"Do the {les} show {word}?"
                else:
                    q = f"Is the {les} {word}?" if one else f"Are the {les} {word}?"
            else:
                verb = "Is the lesion" if one else "Are the lesions"
                q = f"{verb} {asked} than the surrounding tissue?"
            out.append(Candidate(q, _yes_no(asked == t.intensity), "CLOSED", "intensity", "intensity-closed"))
    if not one:
        return out
    # position of the single lesion: an open and a closed question per axis the image has
    region = t.region
    for axis, ans in sorted(t.position.items()):
        if axis == "lr":
            q = _pick(rng, ["Which side is the lesion on?", "Is the lesion on the left or the right side?",
                            "On which side of the patient is the lesion?"])
        elif axis == "ud":
            q = _pick(rng, [f"Is the lesion in the upper or lower part of the {region}?",
                            f"Is the lesion in the upper or the lower half of the {region}?"])
        else:
            q = _pick(rng, ["Is the lesion anterior or posterior?",
                            f"Is the lesion in the anterior or posterior part of the {region}?"])
        out.append(Candidate(q, ans, "OPEN", "position", f"position-open-{axis}"))
        if axis == "lr":
            asked = _pick(rng, ["left", "right"])
            q = _pick(rng, [f"Is the lesion on the {asked} side?", f"Is the lesion on the patient's {asked}?"])
        elif axis == "ud":
            asked = _pick(rng, ["upper", "lower"])
            q = f"Is the lesion in the {asked} half of the {region}?"
        else:
            asked = _pick(rng, ["anterior", "posterior"])
            q = _pick(rng, [f"Is the lesion {asked}?", f"Is the lesion in the {asked} part of the {region}?"])
        out.append(Candidate(q, _yes_no(asked == ans), "CLOSED", "position", f"position-closed-{axis}"))
    # size of the single lesion: an open and a closed question
    if t.size is not None:
        q = _pick(rng, ["How large is the lesion?", "What is the size of the lesion?",
                        "Is the lesion small, medium or large?"])
        out.append(Candidate(q, t.size, "OPEN", "size", "size-open"))
        form = int(rng.integers(3))
        if form == 0:
            q, ans = "Is the lesion larger than 35 mm?", _yes_no(t.size == "large")
        elif form == 1:
            q, ans = "Is the lesion smaller than 2 cm?", _yes_no(t.size == "small")
        else:
            q, ans = "Is the lesion at least 20 mm across?", _yes_no(t.size != "small")
        out.append(Candidate(q, ans, "CLOSED", "size", f"size-closed-{form}"))
    return out


def balance(items: list[tuple[str, Candidate]], rng: np.random.Generator) -> list[bool]:
    """Keep-flags that make every answer of a balancing group equally frequent.

    ``items`` are (split, candidate) pairs; groups are (split, candidate.group, question text), so
    that no single wording carries an answer prior either (e.g. "Is this image normal?" is mostly
    "no" when most images have lesions, "Is this an MRI scan?" mostly "yes" when most images are
    MR). Candidates with an empty group (open recognition questions) are all kept. A wording keeps
    as many questions per answer as its rarest answer has (chosen at random), and is dropped when it
    lacks one of the answers its group has in that split, so the group's answers stay equally
    frequent too.
    """
    keep = [True] * len(items)
    groups: dict[tuple[str, str, str], dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    answers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for i, (split, c) in enumerate(items):
        if c.group:
            groups[(split, c.group, c.question)][c.answer].append(i)
            answers[(split, c.group)].add(c.answer)
    for key in sorted(groups):
        by_answer = groups[key]
        if len(by_answer) < 2 or set(by_answer) != answers[key[:2]]:
            for idx in by_answer.values():
                for i in idx:
                    keep[i] = False
            continue
        cap = min(len(v) for v in by_answer.values())
        for ans in sorted(by_answer):
            idx = by_answer[ans]
            if len(idx) > cap:
                chosen = set(rng.choice(len(idx), size=cap, replace=False).tolist())
                for j, i in enumerate(idx):
                    if j not in chosen:
                        keep[i] = False
    return keep
