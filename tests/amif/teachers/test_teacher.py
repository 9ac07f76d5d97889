"""Soft-label teachers: a tiny CLIP in the transformers format, the MiniLM caption teacher, the cache."""

import csv
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import ConcatDataset, DataLoader

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from amif.data.pretrain_corpora import PretrainDataset, read_mimic_cxr, read_roco  # noqa: E402
from amif.data.records import CaptionRecord  # noqa: E402
from amif.data.transforms import build_teacher_transform  # noqa: E402
from amif.errors import AmifError, CheckpointError, ConfigError, DataError  # noqa: E402
from amif.teachers import (  # noqa: E402
    CachedTeacher,
    CaptionSimilarityTeacher,
    CLIPTeacher,
    build_teacher_cache,
    cache_index_path,
    load_teacher,
)

from helpers import write_tiny_clip  # noqa: E402

WORDS = "chest x ray lung heart brain ct mri scan the of a with normal study findings no acute process row".split()
MEAN = (0.5, 0.4, 0.3)
STD = (0.2, 0.25, 0.3)


@pytest.fixture(scope="module")
def clip_dir(module_tmp):
    d = module_tmp("tiny_clip")
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS
    tok = write_tiny_clip(d, tokens, image_size=32, num_layers=2)
    assert tok.convert_tokens_to_ids("chest") == 5
    (d / "preprocessor_config.json").write_text(json.dumps(
        {"crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 32}, "image_mean": list(MEAN),
         "image_std": list(STD)}))
    return d


@pytest.fixture(scope="module")
def clip_teacher(clip_dir):
    return CLIPTeacher.from_folder(clip_dir)


@pytest.fixture(scope="module")
def minilm():
    return CaptionSimilarityTeacher.from_package()


@pytest.fixture
def mimic(tmp_path):
    root = tmp_path / "mimic"
    studies = {"s1": ["PA", "LATERAL", "PA"], "s2": ["AP"], "s3": ["PA", "PA"], "s4": ["LATERAL", "AP"]}
    rows, seed = [], 0
    for sid, views in studies.items():
        paths = []
        for k in range(len(views)):
            rel = f"files/{sid}/{k}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            arr = np.random.default_rng(seed).integers(0, 255, (40, 36, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / rel)
            paths.append(str((root / rel).absolute()))
            seed += 1
        rows.append([sid, ";".join(paths), ";".join(views), f"Findings: {sid}, chest x-ray; no acute process."])
    with (root / "training_mv.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["study_id", "image_path", "view_type", "report_content"], *rows])
    return root


# ---------------------------------------------------------------- CLIP teacher


def test_clip_teacher_loads_folder(clip_teacher):
    t = clip_teacher
    assert t.name.startswith("tiny_clip")
    assert t.image_size == 32 and t.mean == MEAN and t.std == STD
    assert t.logit_scale == pytest.approx(float(np.exp(2.6592)), rel=1e-4)  # CLIPConfig default init
    assert t.max_length == 40  # 120 capped by the text model's positions
    assert t.uses_images and not any(p.requires_grad for p in t.model.parameters()) and not t.model.training


def test_clip_teacher_embeddings_unit_norm_and_deterministic(clip_teacher):
    pix = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    a, b = clip_teacher.encode_images(pix), clip_teacher.encode_images(pix)
    assert a.shape == (3, 16) and torch.equal(a, b)
    assert torch.allclose(a.norm(dim=-1), torch.ones(3), atol=1e-5)
    texts = ["chest x ray", "brain mri scan with no acute findings", "heart"]
    v = clip_teacher.encode_texts(texts)
    assert v.shape == (3, 16) and torch.equal(v, clip_teacher.encode_texts(texts))
    assert torch.allclose(v.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert not a.requires_grad and a.dtype == torch.float32
    with pytest.raises(DataError, match=r"\[B, 3, H, W\]"):
        clip_teacher.encode_images(torch.zeros(3, 32, 32))


def test_clip_teacher_batch_needs_teacher_images(clip_teacher, mimic):
    root, records, _ = read_mimic_cxr(mimic)
    plain = PretrainDataset(root, records, build_teacher_transform(32, MEAN, STD))
    batch = next(iter(DataLoader(plain, batch_size=2)))
    with pytest.raises(DataError, match="teacher_transform"):
        clip_teacher.teacher_embeddings(batch)
    tf = build_teacher_transform(image_size=clip_teacher.image_size, mean=clip_teacher.mean, std=clip_teacher.std)
    ds = PretrainDataset(root, records, tf, teacher_transform=tf)
    batch = next(iter(DataLoader(ds, batch_size=4)))
    u1, u2, v = clip_teacher.teacher_embeddings(batch)
    assert u1.shape == u2.shape == v.shape == (4, 16)
    assert torch.allclose(u1, clip_teacher.encode_images(batch["teacher_image1"]))


def test_clip_teacher_folder_errors(tmp_path, clip_dir):
    with pytest.raises(CheckpointError, match="not found"):
        CLIPTeacher.from_folder(tmp_path / "absent")
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "config.json").write_text((clip_dir / "config.json").read_text())
    with pytest.raises(CheckpointError, match="no weights"):
        CLIPTeacher.from_folder(partial)
    (partial / "model.safetensors").write_bytes((clip_dir / "model.safetensors").read_bytes())
    with pytest.raises(CheckpointError, match="no tokenizer"):
        CLIPTeacher.from_folder(partial)
    (partial / "model.safetensors").write_bytes(b"garbage")
    (partial / "vocab.txt").write_text((clip_dir / "vocab.txt").read_text())
    with pytest.raises(CheckpointError, match="cannot load"):
        CLIPTeacher.from_folder(partial)


# ---------------------------------------------------------------- caption teacher (real MiniLM)


def test_caption_teacher_similar_captions_are_closer(minilm):
    texts = ["chest x ray shows pneumonia in the right lower lung",
             "right lower lobe pneumonia on a chest radiograph",
             "histology of a skin biopsy stained with hematoxylin and eosin"]
    e = minilm.encode_texts(texts)
    assert e.shape == (3, 384)
    assert torch.allclose(e.norm(dim=-1), torch.ones(3), atol=1e-5)
    sim = e @ e.T
    assert sim[0, 1] > sim[0, 2] + 0.2 and sim[0, 1] > sim[1, 2] + 0.2
    assert torch.allclose(e, minilm.encode_texts(texts), atol=1e-6)
    assert minilm.logit_scale == 20.0 and not minilm.uses_images


def test_caption_teacher_embeddings_are_caption_embeddings(minilm):
    batch = {"caption": ["axial ct of the brain", "chest x ray"], "id": ["a", "b"]}
    u1, u2, v = minilm.teacher_embeddings(batch)
    assert torch.equal(u1, v) and torch.equal(u2, v) and v.shape == (2, 384)
    with pytest.raises(AmifError, match="no image tower"):
        minilm.encode_images(torch.zeros(1, 3, 8, 8))


# ---------------------------------------------------------------- cache


def test_cache_round_trip_clip(clip_teacher, mimic, tmp_path):
    root, records, _ = read_mimic_cxr(mimic)
    tf = build_teacher_transform(image_size=clip_teacher.image_size, mean=clip_teacher.mean, std=clip_teacher.std)
    ds = PretrainDataset(root, records, tf, teacher_transform=tf)
    out = build_teacher_cache(clip_teacher, ds, out_path=tmp_path / "cache" / "clip.safetensors", batch_size=3)
    assert out.is_file() and cache_index_path(out).is_file()
    cached = load_teacher(out)
    assert isinstance(cached, CachedTeacher) and len(cached) == 8 and records[0].id in cached
    assert cached.logit_scale == pytest.approx(clip_teacher.logit_scale)
    assert cached.image_size == 32 and cached.mean == MEAN and cached.name == f"cache:{clip_teacher.name}"
    for batch in DataLoader(ds, batch_size=4):
        direct = clip_teacher.teacher_embeddings(batch)
        from_cache = cached.teacher_embeddings(batch)
        for d, c in zip(direct, from_cache):
            assert torch.allclose(d, c, atol=1e-5)
    # building from the record list + root gives the same file contents
    out2 = build_teacher_cache(clip_teacher, records, root, tmp_path / "clip2.safetensors", batch_size=8)
    again = CachedTeacher.load(out2)
    assert again.ids == cached.ids and torch.allclose(again.image, cached.image, atol=1e-5)


def test_cache_round_trip_caption_teacher_and_errors(minilm, mimic, tmp_path):
    root, records, _ = read_mimic_cxr(mimic)
    ds = PretrainDataset(root, records, lambda img: torch.zeros(1))
    out = build_teacher_cache(minilm, ds, out_path=tmp_path / "minilm.safetensors")
    cached = CachedTeacher.load(out)
    assert cached.image is cached.text
    from safetensors import safe_open

    with safe_open(str(out), "pt") as f:
        assert set(f.keys()) == {"text"} and f.metadata()["teacher"] == "caption-minilm"
    batch = next(iter(DataLoader(ds, batch_size=4)))
    for d, c in zip(minilm.teacher_embeddings(batch), cached.teacher_embeddings(batch)):
        assert torch.allclose(d, c, atol=1e-5)
    with pytest.raises(DataError, match=r"'nope'.*not in the teacher cache"):
        cached.teacher_embeddings({"id": [records[0].id, "nope"], "caption": ["a", "b"]})
    dup = [records[0], CaptionRecord(id=records[0].id, image=records[1].image, caption="x", split="train")]
    with pytest.raises(DataError, match="duplicate record id"):
        build_teacher_cache(minilm, dup, root, tmp_path / "dup.safetensors")
    with pytest.raises(ConfigError, match="root"):
        build_teacher_cache(minilm, records, None, tmp_path / "x.safetensors")
    # one cache for several corpora (ConcatDataset), ids stay unique thanks to the corpus prefixes
    roco = tmp_path / "roco"
    (roco / "images").mkdir(parents=True)
    Image.new("RGB", (8, 8), (10, 20, 30)).save(roco / "images" / "r.png")
    with (roco / "training.csv").open("w", newline="") as f:
        csv.writer(f).writerows([["image_path", "text"], ["r.png", "Axial CT of the brain."]])
    both = ConcatDataset([ds, PretrainDataset(roco, read_roco(roco).records, lambda img: torch.zeros(1))])
    multi = CachedTeacher.load(build_teacher_cache(minilm, both, out_path=tmp_path / "both.safetensors"))
    assert len(multi) == 9 and "roco:images/r.png" in multi
    batch = next(iter(DataLoader(both, batch_size=9)))
    for d, c in zip(minilm.teacher_embeddings(batch), multi.teacher_embeddings(batch)):
        assert torch.allclose(d, c, atol=1e-5)
    cache_index_path(out).unlink()
    with pytest.raises(CheckpointError, match="not found"):
        CachedTeacher.load(out)


def test_load_teacher_dispatch(clip_dir, tmp_path):
    assert isinstance(load_teacher(clip_dir), CLIPTeacher)
    with pytest.raises(ConfigError):
        load_teacher(tmp_path / "nothing-here")
