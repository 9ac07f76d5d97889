"""Builders of tiny datasets in the exact layouts the dataset authors publish (for the converter tests).

Every image is a small JPEG whose colour is derived from its file name, so two different images never
have the same bytes (the leak checker compares content hashes).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

from PIL import Image


def make_image(path: Path, size: tuple[int, int] = (8, 8)) -> Path:
    """A small RGB JPEG with a colour (and one pixel) derived from ``path.name``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256(path.name.encode()).digest()
    im = Image.new("RGB", size, (h[0], h[1], h[2]))
    im.putpixel((0, 0), (h[3], h[4], h[5]))
    im.save(path, format="JPEG", quality=95)
    return path


def _dump(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------- VQA-RAD


def _rad_osf_row(qid: int, phrase: str, image: str, question: str, answer: object, answer_type: str,
                 question_type: str = "PRES") -> dict:
    return {
        "qid": qid, "phrase_type": phrase, "qid_linked_id": f"link-{qid}",
        "image_case_url": f"https://medpix.nlm.nih.gov/case?id=case-{image[:-4]}", "image_name": image,
        "image_organ": "HEAD", "evaluation": "not evaluated", "question": question,
        "question_rephrase": "NULL", "question_relation": "NULL", "question_frame": "NULL",
        "question_type": question_type, "answer": answer, "answer_type": answer_type,
    }


RAD_OSF_FILE = "VQA_RAD Dataset Public.json"
RAD_OSF_IMAGES = "VQA_RAD Image Folder"


def rad_osf_rows() -> list[dict]:
    """12 records on 6 images: 9 training (freeform / para) and 3 test (test_freeform / test_para)."""
    rows = []
    qid = 0
    for n in range(1, 7):
        img = f"synpic{n}.jpg"
        qid += 1
        rows.append(_rad_osf_row(qid, "freeform", img, f"Is there a lesion in image {n}?", "Yes", "CLOSED "))
        if n <= 3:
            qid += 1
            rows.append(_rad_osf_row(qid, "para", img, f"How many lesions are in image {n}?", n, "OPEN",
                                     "COUNT, PRES"))
    qid += 1
    rows.append(_rad_osf_row(qid, "test_freeform", "synpic1.jpg", "What organ is shown?", "brain", "open"))
    qid += 1
    rows.append(_rad_osf_row(qid, "test_para", "synpic2.jpg", "Which organ is imaged?", "liver", "OPEN"))
    qid += 1
    rows.append(_rad_osf_row(qid, "test_freeform", "synpic4.jpg", "Is this normal?", "no", "CLOSED"))
    return rows


def build_vqa_rad_osf(root: Path, rows: list[dict] | None = None) -> Path:
    """``root/VQA_RAD Dataset Public.json`` + ``root/VQA_RAD Image Folder/synpicN.jpg`` (one unused image)."""
    rows = rad_osf_rows() if rows is None else rows
    _dump(root / RAD_OSF_FILE, rows)
    for n in range(1, 8):  # synpic7 is in the folder but unused, as in the real release
        make_image(root / RAD_OSF_IMAGES / f"synpic{n}.jpg")
    return root


def build_vqa_rad_mevf(root: Path, image_dir: str = "images", train: list[dict] | None = None) -> Path:
    """``root/trainset.json``, ``root/testset.json`` and ``root/<image_dir>/synpicN.jpg`` (MEVF layout)."""
    keys = ("qid", "image_name", "image_organ", "answer", "answer_type", "question_type", "question",
            "phrase_type")
    rows = [{k: r[k] for k in keys} for r in rad_osf_rows()]
    tr = [r for r in rows if not r["phrase_type"].startswith("test")] if train is None else train
    te = [r for r in rows if r["phrase_type"].startswith("test")]
    _dump(root / "trainset.json", tr)
    _dump(root / "testset.json", te)
    for n in range(1, 7):
        make_image(root / image_dir / f"synpic{n}.jpg")
    return root


# -------------------------------------------------------------------------------------------- SLAKE


def _slake_row(qid: int, img_id: int, question: str, answer: object, lang: str, answer_type: str,
               content_type: str = "Organ") -> dict:
    return {
        "img_id": img_id, "img_name": f"xmlab{img_id}/source.jpg", "question": question, "answer": answer,
        "q_lang": lang, "location": "Abdomen", "modality": "CT", "answer_type": answer_type,
        "base_type": "vqa", "content_type": content_type, "triple": ["vhead", "_", "_"], "qid": qid,
    }


def slake_rows() -> dict[str, list[dict]]:
    """Per split: English and Chinese questions; images xmlab0-1 train, xmlab2 val, xmlab3 test."""
    return {
        "train": [
            _slake_row(0, 0, "Which organ is abnormal?", "Liver", "en", "OPEN"),
            _slake_row(1, 0, "哪个器官不正常？", "肝脏", "zh", "OPEN"),
            _slake_row(2, 1, "Is this a CT image?", "Yes", "en", "CLOSED", "Modality"),
            _slake_row(3, 1, "How many kidneys are there?", 2, "en", "OPEN", "Quantity"),
        ],
        "val": [
            _slake_row(10, 2, "Does the picture contain the liver?", "No", "en", "CLOSED"),
            _slake_row(11, 2, "图片中包含肝脏吗？", "不", "zh", "CLOSED"),
        ],
        "test": [
            _slake_row(20, 3, "What modality is used?", "MRI", "en", "OPEN", "Modality"),
            _slake_row(21, 3, "这是什么成像方式？", "核磁共振", "zh", "OPEN", "Modality"),
        ],
    }


def build_slake(root: Path, val_name: str = "validate.json", rows: dict[str, list[dict]] | None = None) -> Path:
    """``root/{train,<val_name>,test}.json`` and ``root/imgs/xmlabN/{source.jpg,mask.png,...}``."""
    rows = slake_rows() if rows is None else rows
    _dump(root / "train.json", rows["train"])
    _dump(root / val_name, rows["val"])
    _dump(root / "test.json", rows["test"])
    for n in range(4):
        folder = root / "imgs" / f"xmlab{n}"
        make_image(folder / "source.jpg")
        Image.new("L", (8, 8), 0).save(folder / "mask.png")
        _dump(folder / "detection.json", [{"Liver": [1, 1, 4, 4]}])
        _dump(folder / "question.json", [])
    return root


# ------------------------------------------------------------------------------------------ PathVQA


def pathvqa_rows() -> dict[str, list[dict]]:
    return {
        "train": [
            {"image": "train_0000", "question": "Does this image show necrosis?", "answer": "yes"},
            {"image": "train_0000", "question": "What is present?", "answer": "granuloma"},
            {"image": "train_0001", "question": "Is inflammation present?", "answer": "No"},
        ],
        "val": [
            {"image": "val_0000", "question": "What stain is used?", "answer": "hematoxylin and eosin"},
            {"image": "val_0000", "question": "Is this benign?", "answer": "yes"},
        ],
        "test": [
            {"image": "test_0000", "question": "How are the cells arranged?", "answer": "in sheets"},
            {"image": "test_0001", "question": "Is this a carcinoma?", "answer": "yes"},
        ],
    }


def build_pathvqa(root: Path, prefix: str = "pvqa", rows: dict[str, list[dict]] | None = None) -> Path:
    """``root/<prefix>/qas/{split}/{split}_qa.pkl`` and ``root/<prefix>/images/{split}/*.jpg``."""
    rows = pathvqa_rows() if rows is None else rows
    base = root / prefix if prefix else root
    for split, rs in rows.items():
        path = base / "qas" / split / f"{split}_qa.pkl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(rs))
        for r in rs:
            if isinstance(r, dict) and isinstance(r.get("image"), str) and "/" not in r["image"]:
                make_image(base / "images" / split / f"{r['image']}.jpg")
    (base / "qas" / "ans2label.pkl").write_bytes(pickle.dumps({"yes": 0, "no": 1}))
    return root


# ------------------------------------------------------------------------------------- VQA-Med-2019

MED_TRAIN = "ImageClef-2019-VQA-Med-Training"
MED_VAL = "ImageClef-2019-VQA-Med-Validation"
MED_TEST = "VQAMed2019Test"
MED_TEST_FILE = "VQAMed2019_Test_Questions_w_Ref_Answers.txt"

_MED_ROWS = {
    "Modality": [("what modality is used?", "ct"), ("is this an mri?", "no")],
    "Plane": [("which plane is shown?", "axial")],
    "Organ": [("what organ system is imaged?", "skull and contents")],
    "Abnormality": [("what is abnormal?", "meningioma"), ("is this image abnormal?", "yes")],
}


def med_lines(split: str, category: str) -> list[str]:
    """``synpic...|question|answer`` rows of one category file (image ids are per split)."""
    return [f"synpic{split}{i}|{q}|{a}" for i, (q, a) in enumerate(_MED_ROWS[category])]


def build_vqa_med_2019(root: Path, extra_lines: dict[str, list[str]] | None = None) -> Path:
    """The official ImageCLEF folders: training, validation (per-category files) and test (4 fields)."""
    extra_lines = extra_lines or {}
    for split, folder, images in (("train", MED_TRAIN, "Train_images"), ("val", MED_VAL, "Val_images")):
        qa = root / folder / "QAPairsByCategory"
        qa.mkdir(parents=True, exist_ok=True)
        all_lines = []
        for c, (cat, _) in enumerate(_MED_ROWS.items(), start=1):
            lines = med_lines(split, cat) + extra_lines.get(f"{split}/{cat}", [])
            (qa / f"C{c}_{cat}_{split}.txt").write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
            all_lines += lines
        (root / folder / f"All_QA_Pairs_{split}.txt").write_text("\n".join(all_lines) + "\n", encoding="utf-8")
        for i in range(2):
            make_image(root / folder / images / f"synpic{split}{i}.jpg")
    test_lines = [f"synpictest{i % 2}|{cat.lower()}|{q}|{a}" for cat, qa in _MED_ROWS.items()
                  for i, (q, a) in enumerate(qa)] + extra_lines.get("test", [])
    (root / MED_TEST).mkdir(parents=True, exist_ok=True)
    (root / MED_TEST / MED_TEST_FILE).write_text("\n".join(test_lines) + "\n", encoding="utf-8")
    (root / MED_TEST / "VQAMed2019_Test_Questions.txt").write_text(
        "\n".join("|".join(x.split("|")[:3:2]) for x in test_lines) + "\n", encoding="utf-8")
    for i in range(2):
        make_image(root / MED_TEST / "VQAMed2019_Test_Images" / f"synpictest{i}.jpg")
    return root


def build_vqa_med_2019_m3ae(root: Path) -> Path:
    """The M3AE re-packaging: ``{split}/QA/{Category}.csv`` (pipe-separated) and ``{split}/images/``."""
    for split in ("train", "val", "test"):
        for cat in _MED_ROWS:
            path = root / split / "QA" / f"{cat}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("\n".join(med_lines(split, cat)) + "\n", encoding="utf-8")
        for i in range(2):
            make_image(root / split / "images" / f"synpic{split}{i}.jpg")
    return root
