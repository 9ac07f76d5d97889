"""Mirrored training copies (data.mirror_train): word swaps, which records mirror, flipped pixels."""

from __future__ import annotations

import torch
from PIL import Image

from amif.data.mirror import mirror_record, swap_words, with_mirrored_copies
from amif.data.records import VQARecord
from amif.data.transforms import build_eval_transform
from amif.data.vqa_dataset import VQADataset


def _rec(qid: str, question: str, answer: str, axes: dict | None) -> VQARecord:
    extra = {"axes": axes} if axes is not None else {}
    return VQARecord(qid=qid, image="img.png", question=question, answer=answer, split="train", extra=extra)


def test_swap_words_whole_words_and_case():
    assert swap_words("Is the lesion on the patient's left?", "lr") == "Is the lesion on the patient's right?"
    assert swap_words("Left", "lr") == "Right"
    assert swap_words("Is the lesion on the left or the right side?", "lr") == \
        "Is the lesion on the right or the left side?"
    assert swap_words("Is the lesion anterior?", "ap") == "Is the lesion posterior?"
    assert swap_words("Is the lesion anterior?", "lr") == "Is the lesion anterior?"  # other axis: untouched
    assert swap_words("the brightness", "lr") == "the brightness"  # "right" inside a word stays
    assert swap_words("left", "") == "left"


def test_mirror_record_follows_the_horizontal_axis():
    lr = mirror_record(_rec("a", "Which side is the lesion on?", "left", {"horizontal": "lr", "vertical": "ap"}))
    assert (lr.qid, lr.answer, lr.extra["mirrored"]) == ("a#mirror", "right", True)
    sag = mirror_record(_rec("b", "Is the lesion anterior or posterior?", "posterior",
                             {"horizontal": "ap", "vertical": "ud"}))
    assert sag.answer == "anterior"
    none = mirror_record(_rec("c", "Is the lesion in the upper half of the image?", "yes",
                              {"horizontal": None, "vertical": "ud"}))
    assert (none.question, none.answer) == ("Is the lesion in the upper half of the image?", "yes")
    assert mirror_record(_rec("d", "Is the lesion on the left side?", "yes", None)) is None


def test_dataset_flips_only_the_copies(tmp_path):
    img = torch.zeros(3, 8, 8)
    img[:, :, :2] = 1.0  # bright on the image's left
    Image.fromarray((img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(tmp_path / "img.png")
    recs = [_rec("a", "Which side is the lesion on?", "right", {"horizontal": "lr"}),
            _rec("b", "Which side is the lesion on?", "right", None)]
    records, flip = with_mirrored_copies(recs)
    assert [r.qid for r in records] == ["a", "b", "a#mirror"] and flip == [False, False, True]
    ds = VQADataset(tmp_path, records, build_eval_transform(8), image_size=8, flip=flip)
    plain, mirrored = ds[0]["pixel_values"], ds[2]["pixel_values"]
    assert torch.equal(mirrored, plain.flip(-1)) and not torch.equal(mirrored, plain)
    assert plain[0, 0, 0] > plain[0, 0, -1] and mirrored[0, 0, -1] > mirrored[0, 0, 0]
    assert ds[2]["answer"] == "left"


def test_finetune_datasets_add_copies_only_when_asked(tmp_path):
    from amif.data.records import load_split, write_records
    from amif_train.config import load_config
    from amif_train.finetune import build_datasets

    from helpers import TINY_CONFIG, make_shapes_dataset

    root = make_shapes_dataset(tmp_path / "shapes")
    train = load_split(root, "train")
    for r in train:
        r.extra["axes"] = {"horizontal": "lr", "vertical": "ud"}
    write_records(root / "train.jsonl", train)
    base = [f"data.root={root}", "data.augment.enabled=false"]  # no random crops: pixels comparable
    plain = build_datasets(load_config(TINY_CONFIG, base), 32)["datasets"]["train"]
    doubled = build_datasets(load_config(TINY_CONFIG, [*base, "data.mirror_train=true"]), 32)
    ds = doubled["datasets"]["train"]
    assert len(plain) == len(train) and len(ds) == 2 * len(train)
    assert len(doubled["datasets"]["val"]) == len(load_split(root, "val"))  # evaluation splits: never mirrored
    k = len(train)
    assert ds[k]["qid"] == train[0].qid + "#mirror"
    assert torch.equal(ds[k]["pixel_values"], ds[0]["pixel_values"].flip(-1))
    want = {"left": "right", "right": "left"}.get(train[0].answer, train[0].answer)
    assert ds[k]["answer"] == want
