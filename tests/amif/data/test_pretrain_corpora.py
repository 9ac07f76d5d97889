"""Pre-training corpus readers (ROCO, MedICaT, MIMIC-CXR, PMC-OA, own format), view pairing, dataset."""

import csv
import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from amif.data.pretrain_corpora import (
    PretrainDataset,
    group_views,
    read_caption_folder,
    read_corpus,
    read_medicat,
    read_mimic_cxr,
    read_pmc_oa,
    read_roco,
    select_two_views,
)
from amif.data.records import CaptionRecord, write_records
from amif.errors import DataError


def _png(path: Path, seed: int = 0, size: int = 12) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _jsonl(path: Path, objs: list) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs), encoding="utf-8")
    return path


def to_tensor(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


# ---------------------------------------------------------------- ROCO


@pytest.fixture
def roco(tmp_path):
    root = tmp_path / "roco-dataset"
    root.mkdir()
    for i in range(3):
        _png(root / "images" / f"ROCO_{i:05d}.png", i)
    _csv(root / "training.csv", ["image_path", "text"], [
        ["ROCO_00000.png", "Axial CT of the chest."],
        ["images/ROCO_00001.png", "MRI: brain, T2-weighted"],
        ["ROCO_00002.png", "Ultrasound of the liver"],
    ])
    return root


def test_roco_reads_rows(roco):
    corpus = read_roco(roco)
    root, records, skipped = corpus
    assert root == roco and len(skipped) == 0
    assert [r.image for r in records] == ["images/ROCO_00000.png", "images/ROCO_00001.png", "images/ROCO_00002.png"]
    assert records[0].id == "roco:images/ROCO_00000.png"
    assert records[1].caption == "MRI: brain, T2-weighted"  # raw text kept; cleaned by the dataset
    assert all(r.split == "train" and r.study_id is None for r in records)


def test_roco_name_and_caption_columns_with_id(tmp_path):
    root = tmp_path / "roco"
    _png(root / "images" / "a.jpg")
    _csv(root / "radiologytraindata.csv", ["id", "name", "caption"], [["ROCO_1", "a.jpg", "x-ray of hand"]])
    records = read_roco(root, csv_name="radiologytraindata.csv").records
    assert records[0].id == "roco:ROCO_1" and records[0].image == "images/a.jpg"


def test_roco_bad_rows_raise_with_file_and_row(roco):
    _csv(roco / "training.csv", ["image_path", "text"], [
        ["ROCO_00000.png", "fine"], ["ROCO_00001.png", " ... "], ["missing.png", "caption"],
    ])
    with pytest.raises(DataError, match=r"training\.csv.*row 2.*empty") as e:
        read_roco(roco)
    assert e.value.record == "row 2" and e.value.path.endswith("training.csv")
    _csv(roco / "training.csv", ["image_path", "text"], [["ROCO_00000.png", "fine"], ["missing.png", "caption"]])
    with pytest.raises(DataError, match=r"row 2.*missing\.png"):
        read_roco(roco)


def test_roco_skip_bad_counts_every_skip(roco):
    _csv(roco / "training.csv", ["image_path", "text"], [
        ["ROCO_00000.png", "fine"], ["ROCO_00001.png", "!!"], ["missing.png", "caption"], ["ROCO_00000.png", "dup"],
    ])
    corpus = read_roco(roco, skip_bad=True)
    assert [r.caption for r in corpus.records] == ["fine"]
    assert corpus.skipped.count == 3
    assert corpus.skipped.by_kind() == {"empty caption": 1, "missing image": 1, "duplicate id": 1}
    assert [s.record for s in corpus.skipped] == ["row 2", "row 3", "row 4"]
    assert all(s.path.endswith("training.csv") for s in corpus.skipped)
    assert "skipped 3 row(s)" in corpus.skipped.summary()


def test_roco_escaping_path_always_raises(roco):
    _csv(roco / "training.csv", ["image_path", "text"], [["../../etc/passwd", "caption"]])
    with pytest.raises(DataError, match="escapes"):
        read_roco(roco, image_dir="", skip_bad=True)


def test_roco_missing_column_and_file(roco):
    _csv(roco / "training.csv", ["file", "text"], [["a", "b"]])
    with pytest.raises(DataError, match=r"training\.csv.*no image column"):
        read_roco(roco)
    with pytest.raises(DataError, match="not found"):
        read_roco(roco, csv_name="nope.csv")


def test_max_rows_and_no_image_check(roco):
    assert len(read_roco(roco, max_rows=2).records) == 2
    _csv(roco / "training.csv", ["image_path", "text"], [["absent.png", "caption"]])
    assert read_roco(roco, check_images=False).records[0].image == "images/absent.png"


# ---------------------------------------------------------------- MedICaT


def test_medicat_reads_and_validates(tmp_path):
    root = tmp_path / "medicat"
    _png(root / "figures" / "abc_1-Figure1-1.png")
    _png(root / "figures" / "def_2-Figure3-1.png")
    _jsonl(root / "training.json", [
        {"pdf_hash": "abc", "fig_uri": "1-Figure1-1.png", "s2_caption": "Figure 1: CT scan.", "other": 1},
        {"pdf_hash": "def", "fig_uri": "2-Figure3-1.png", "s2_caption": "Histology (H&E)."},
        {"pdf_hash": "zzz", "fig_uri": "9.png", "s2_caption": "no image on disk"},
        "{not json",
        {"pdf_hash": "def", "fig_uri": "2-Figure3-1.png", "s2_caption": ""},
    ])
    with pytest.raises(DataError, match=r"training\.json.*line 3.*zzz_9\.png"):
        read_medicat(root)
    corpus = read_medicat(root, skip_bad=True)
    assert [r.id for r in corpus.records] == ["medicat:abc_1-Figure1-1.png", "medicat:def_2-Figure3-1.png"]
    assert corpus.records[0].image == "figures/abc_1-Figure1-1.png"
    assert corpus.skipped.by_kind() == {"missing image": 1, "malformed row": 1, "empty caption": 1}
    assert [s.record for s in corpus.skipped] == ["line 3", "line 4", "line 5"]


# ---------------------------------------------------------------- MIMIC-CXR


@pytest.fixture
def mimic(tmp_path):
    root = tmp_path / "mimic"
    files = {
        "s1": [("files/p1/s1/a.jpg", "PA"), ("files/p1/s1/b.jpg", "LATERAL"), ("files/p1/s1/c.jpg", "PA")],
        "s2": [("files/p2/s2/d.jpg", "AP")],
        "s3": [("files/p3/s3/e.jpg", "PA"), ("files/p3/s3/f.jpg", "PA")],
    }
    seed = 0
    for views in files.values():
        for rel, _ in views:
            _png(root / rel, seed)
            seed += 1
    rows = []
    for sid, views in files.items():
        rows.append([";".join(str((root / rel).absolute()) for rel, _ in views), ";".join(v for _, v in views),
                     f"FINDINGS: study {sid}. No acute process."])
    _csv(root / "training_mv.csv", ["image_path", "view_type", "report_content"], rows)
    return root


def test_mimic_multi_view_records(mimic):
    root, records, skipped = read_mimic_cxr(mimic)
    assert len(records) == 6 and not skipped
    assert records[0].image == "files/p1/s1/a.jpg" and records[0].view == "PA"
    assert records[1].study_id == "mimic:row1" and records[1].id == "mimic:row1:1"
    groups = group_views(records)
    assert [len(g) for g in groups] == [3, 1, 2]
    assert {r.caption for r in groups[0]} == {"FINDINGS: study s1. No acute process."}


def test_select_two_views_prefers_different_view_types(mimic):
    groups = group_views(read_mimic_cxr(mimic).records)
    rng = random.Random(0)
    pairs = [select_two_views(groups[0], rng) for _ in range(50)]
    assert all(a.view != b.view for a, b in pairs)
    assert {a.view for a, _ in pairs} == {"PA", "LATERAL"}
    a, b = select_two_views(groups[1], rng)
    assert a is b
    for _ in range(20):  # one view type only: two distinct images
        a, b = select_two_views(groups[2], rng)
        assert a is not b
    with pytest.raises(ValueError):
        select_two_views([], rng)


def test_mimic_study_id_column_and_single_view(tmp_path):
    root = tmp_path / "mimic"
    _png(root / "x.jpg")
    _png(root / "y.jpg")
    _csv(root / "training.csv", ["study_id", "image_path", "report_content"],
         [["50414267", "x.jpg", "Normal chest."], ["50414268", "y.jpg", "Cardiomegaly."]])
    records = read_mimic_cxr(root).records
    assert [r.id for r in records] == ["mimic:50414267:0", "mimic:50414268:0"]
    assert all(r.view is None for r in records)
    with pytest.raises(DataError, match="view_type"):
        read_mimic_cxr(root, multi_view=True, csv_name="training.csv")


def test_mimic_absolute_paths_outside_root(mimic, tmp_path):
    old = "/data/old_machine/mimic"
    rows = [[f"{old}/files/p1/s1/a.jpg;{old}/files/p1/s1/b.jpg", "PA;LATERAL", "report"]]
    _csv(mimic / "training_mv.csv", ["image_path", "view_type", "report_content"], rows)
    with pytest.raises(DataError, match=r"row 1.*not under"):
        read_mimic_cxr(mimic, skip_bad=True)
    records = read_mimic_cxr(mimic, abs_prefix=old).records
    assert [r.image for r in records] == ["files/p1/s1/a.jpg", "files/p1/s1/b.jpg"]


def test_mimic_bad_rows(mimic):
    rows = [
        ["files/p1/s1/a.jpg;files/p1/s1/b.jpg", "PA", "report one"],  # misaligned views
        ["files/p1/s1/a.jpg;files/p1/s1/gone.jpg", "PA;LATERAL", "report two"],  # one missing image
        ["files/p2/s2/d.jpg", "AP", "   "],  # empty report
    ]
    _csv(mimic / "training_mv.csv", ["image_path", "view_type", "report_content"], rows)
    with pytest.raises(DataError, match=r"row 1.*2 image path\(s\) but 1 view"):
        read_mimic_cxr(mimic)
    corpus = read_mimic_cxr(mimic, skip_bad=True)
    assert [r.image for r in corpus.records] == ["files/p1/s1/a.jpg"]
    assert [(s.record, s.kind) for s in corpus.skipped] == [
        ("row 1", "malformed row"), ("row 2 (image 2)", "missing image"), ("row 3", "empty caption")]


# ---------------------------------------------------------------- PMC-OA and own format


def test_pmc_oa_image_dir(tmp_path):
    root = tmp_path / "pmc_oa"
    sub = "caption_T060_filtered_top4_sep_v0_subfigures"
    _png(root / sub / "PMC1_fig1_a.jpg")
    _jsonl(root / "train.jsonl", [{"image": "PMC1_fig1_a.jpg", "caption": "Immunostaining of tumour cells."}])
    with pytest.raises(DataError, match="line 1"):
        read_pmc_oa(root)  # default image_dir "images"
    records = read_corpus("pmc-oa", root, image_dir=sub).records
    assert records[0].image == f"{sub}/PMC1_fig1_a.jpg" and records[0].id == "pmc_oa:PMC1_fig1_a.jpg"


def test_caption_folder(tmp_path):
    _png(tmp_path / "images" / "a.png")
    write_records(tmp_path / "captions_train.jsonl", [
        CaptionRecord(id="a", image="images/a.png", caption="Axial CT.", split="train", study_id="s", view="axial"),
        CaptionRecord(id="b", image="images/a.png", caption=" ", split="train"),
    ])
    with pytest.raises(DataError, match=r"captions_train\.jsonl.*line 2"):
        read_caption_folder(tmp_path)
    corpus = read_corpus("captions", tmp_path, skip_bad=True)
    assert [r.id for r in corpus.records] == ["a"] and corpus.records[0].view == "axial"
    assert corpus.skipped.count == 1
    with pytest.raises(DataError, match="unknown corpus"):
        read_corpus("nope", tmp_path)


# ---------------------------------------------------------------- dataset


def test_pretrain_dataset_items(mimic):
    root, records, _ = read_mimic_cxr(mimic)
    ds = PretrainDataset(root, records, to_tensor, teacher_transform=to_tensor, rng=random.Random(1))
    assert len(ds) == 3 and len(ds.records) == 6
    item = ds[0]
    assert set(item) == {"image1", "image2", "teacher_image1", "teacher_image2", "caption", "id", "id2",
                         "study_id", "index", "corpus"}  # no negative_caption: the records have none
    assert item["image1"].shape == (3, 12, 12)
    assert item["caption"] == "findings study s1 no acute process"
    views = {r.id: r.view for r in records}
    assert views[item["id"]] != views[item["id2"]]
    assert item["study_id"] == "mimic:row1"
    single = ds[1]
    assert single["id"] == single["id2"] and torch.equal(single["image1"], single["image2"])
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["image1"].shape == (3, 3, 12, 12) and len(batch["caption"]) == 3
    noisy = PretrainDataset(root, records, lambda img: to_tensor(img) + torch.rand(1))
    one = noisy[1]  # one image, two independent augmentations
    assert one["id"] == one["id2"] and not torch.equal(one["image1"], one["image2"])
    flat = PretrainDataset(root, records, to_tensor, multi_view=False)
    assert len(flat) == 6 and "teacher_image1" not in flat[0]


def test_pretrain_dataset_record_without_study_uses_own_id(roco):
    corpus = read_roco(roco)
    ds = PretrainDataset(corpus.root, corpus.records, to_tensor)
    item = ds[2]
    assert item["study_id"] == item["id"] == item["id2"] == "roco:images/ROCO_00002.png"


def test_pretrain_dataset_bad_captions_and_images(roco):
    recs = read_roco(roco).records
    recs[1].caption = "?!"
    with pytest.raises(DataError, match=r"ROCO_00001\.png.*empty"):
        PretrainDataset(roco, recs, to_tensor)
    ds = PretrainDataset(roco, recs, to_tensor, skip_bad=True)
    assert len(ds) == 2 and ds.skipped.by_kind() == {"empty caption": 1}

    recs = read_roco(roco).records
    (roco / "images" / "ROCO_00002.png").write_bytes(b"not an image at all")
    lazy = PretrainDataset(roco, recs, to_tensor)
    with pytest.raises(DataError, match=r"ROCO_00002\.png.*roco:images/ROCO_00002\.png"):
        lazy[2]
    with pytest.raises(DataError, match=r"ROCO_00002\.png"):
        PretrainDataset(roco, recs, to_tensor, validate=True)
    ds = PretrainDataset(roco, recs, to_tensor, validate=True, skip_bad=True)
    assert len(ds) == 2 and ds.skipped.by_kind() == {"unreadable image": 1}
    assert ds.skipped.items[0].path.endswith("ROCO_00002.png")


def test_pretrain_dataset_negative_captions(mimic):
    root, records, _ = read_mimic_cxr(mimic)
    twins = ["  Findings: the lesion is on the RIGHT.  ", "the lesion is lower"]
    records = [dataclasses.replace(r, extra={**r.extra, "negative_captions": twins}) for r in records]
    ds = PretrainDataset(root, records, to_tensor, rng=random.Random(1))
    drawn = {ds[i % len(ds)]["negative_caption"] for i in range(40)}
    assert drawn == {ds.negative_caption(dataclasses.replace(records[0], extra={"negative_captions": [t]}))
                     for t in twins}
    assert all(d and d == d.strip() for d in drawn)
