"""Shared test helpers: a small generated VQA dataset and a very small model config."""

from __future__ import annotations

import gc
import os
import random
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from amif.data.records import CaptionRecord, VQARecord, write_records

# Overrides turning configs/tiny.yaml into a model that trains in seconds on CPU.
MICRO = [
    "model.image_encoder.image_size=32", "model.image_encoder.patch_size=8",
    "model.image_encoder.hidden_size=48", "model.image_encoder.num_layers=1",
    "model.image_encoder.num_heads=2", "model.image_encoder.intermediate_size=96",
    "model.text_encoder.num_layers=1", "model.fusion.hidden_size=48", "model.fusion.num_layers=1",
    "model.fusion.num_heads=2", "model.fusion.intermediate_size=96", "model.gca.num_heads=2",
    "model.gca.intermediate_size=96", "model.decoder.num_layers=1", "model.decoder.cross_attention_from=0",
    "model.decoder.rank_k=8", "run.progress_bar=false", "data.augment.enabled=false",
]

# With MICRO: smaller checkpoints (a frozen text encoder has no optimizer state; the decoder predicts
# the answers' tokens only), for tests that write many checkpoints.
LEAN = ["run.freeze_text_encoder=true", "model.decoder.output_vocabulary=answers"]

REPO = Path(__file__).resolve().parents[1]  # the repository root (configs/, benchmarks/, docs/)
CONFIGS = REPO / "configs"
TINY_CONFIG = CONFIGS / "tiny.yaml"


def make_shapes_dataset(root: Path, n_images: int = 24, seed: int = 0) -> Path:
    """Images with a bright square in the left or right half; questions about it. Splits by image."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "val": [], "test": []}
    for i in range(n_images):
        side = "left" if i % 2 == 0 else "right"
        img = Image.new("L", (64, 64), 20)
        d = ImageDraw.Draw(img)
        x0 = rng.randint(4, 18) if side == "left" else rng.randint(36, 50)
        y0 = 8 + (i * 7) % 37  # distinct images: no accidental duplicates across splits
        d.rectangle([x0, y0, x0 + 10, y0 + 10], fill=230)
        name = f"images/img{i:03d}.png"
        img.save(root / name)
        split = "train" if i < n_images * 0.6 else ("val" if i < n_images * 0.8 else "test")
        qs = [
            ("which side is the square on?", side, "OPEN", "position"),
            ("is the square on the left?", "yes" if side == "left" else "no", "CLOSED", "position"),
        ]
        for j, (q, a, at, qt) in enumerate(qs):
            splits[split].append(VQARecord(qid=f"q{i}_{j}", image=name, question=q, answer=a, split=split,
                                           answer_type=at, question_type=qt, study_id=f"s{i}"))
    for split, recs in splits.items():
        write_records(root / f"{split}.jsonl", recs)
    return root


def write_tiny_clip(folder: Path, words: list[str], image_size: int = 32, num_layers: int = 1):
    """A randomly initialised CLIP model with a BERT word-piece tokenizer over ``words`` (special
    tokens first) saved in the transformers folder layout; returns the tokenizer."""
    import torch
    from transformers import BertTokenizerFast, CLIPConfig, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    try:
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})  # transformers 5
    except TypeError:  # pragma: no cover - transformers 4
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    torch.manual_seed(0)
    cfg = CLIPConfig(
        text_config=dict(vocab_size=len(words), hidden_size=32, intermediate_size=64, num_hidden_layers=num_layers,
                         num_attention_heads=2, max_position_embeddings=40, pad_token_id=0, bos_token_id=2,
                         eos_token_id=3),
        vision_config=dict(image_size=image_size, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=num_layers, num_attention_heads=2),
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok


def save_micro_model(folder: Path, seed: int = 0) -> Path:
    """A randomly initialised micro AMiF (32 px, 4 x 4 patches) saved as a model folder."""
    import torch

    from amif.models.vqa import AMiFVQA
    from amif_train.config import load_config

    torch.manual_seed(seed)
    cfg = load_config(TINY_CONFIG, MICRO).model
    model = AMiFVQA(cfg, ["yes", "no", "left", "right", "computed tomography", "2"],
                    ["yes", "no", "left", "right", "computed tomography", "mri"])
    return model.save_pretrained(folder)


def write_test_images(folder: Path) -> dict[str, Path]:
    """A PNG, a JPEG, a DICOM (pydicom's CT_small) and a truncated DICOM in ``folder``."""
    import shutil

    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    img = Image.new("L", (48, 48), 30)
    ImageDraw.Draw(img).ellipse([8, 8, 20, 20], fill=220)
    paths = {"png": folder / "scan.png", "jpeg": folder / "scan.jpg", "dicom": folder / "ct.dcm",
             "corrupt_dicom": folder / "broken.dcm", "not_image": folder / "notes.png"}
    img.save(paths["png"])
    img.convert("RGB").save(paths["jpeg"])
    shutil.copy(get_testdata_file("CT_small.dcm"), paths["dicom"])
    data = paths["dicom"].read_bytes()
    paths["corrupt_dicom"].write_bytes(data[: len(data) // 3])
    paths["not_image"].write_text("this is not an image\n")
    return paths


CAPTION_KINDS = ("left", "right", "upper", "lower")


def make_caption_dataset(root: Path, per_kind: dict[str, int], seed: int = 0) -> Path:
    """``captions_{split}.jsonl`` + PNGs: a blob whose size and quadrant the caption states."""
    rng = random.Random(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    for split, n in per_kind.items():
        records = []
        for k, half in enumerate(CAPTION_KINDS):
            for j in range(n):
                img = Image.new("L", (64, 64), 0)
                px = img.load()
                for _ in range(150):  # speckle noise
                    px[rng.randrange(64), rng.randrange(64)] = rng.randrange(0, 80)
                a, b = rng.randint(0, 4), rng.randint(26, 31)  # a bright band over most of one half
                box = {"left": (a, 0, b, 63), "right": (63 - b, 0, 63 - a, 63),
                       "upper": (0, a, 63, b), "lower": (0, 63 - b, 63, 63 - a)}[half]
                ImageDraw.Draw(img).rectangle(box, fill=rng.randint(180, 250))
                name = f"images/{split}_{k}_{j}.png"
                img.save(root / name)
                caption = f"bright {half} half"
                records.append(CaptionRecord(id=f"{split}-{k}-{j}", image=name, caption=caption, split=split))
        rng.shuffle(records)
        write_records(root / f"captions_{split}.jsonl", records)
    return root


def leave_worker() -> None:
    """End a gloo test worker (``mp.spawn``) whose results are saved: tear the process group down, then
    exit at once. Letting the interpreter finalise instead can abort the process (SIGABRT, "terminate
    called without an active exception") when a gloo thread still holds tensors, after the work is done."""
    import torch.distributed as dist

    gc.collect()
    if dist.is_initialized():
        dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)

