"""Teacher caption tokens made in the data workers: the same ids, masks and embeddings as tokenising
the captions in one padded call on the main process."""

import os

import pytest
import torch
from torch.utils.data import DataLoader

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from amif.data.collate import PretrainCollate  # noqa: E402
from amif.teachers import CaptionSimilarityTeacher, CLIPTeacher, MemoCaptionTeacher  # noqa: E402
from amif.teachers.base import pad_encodings  # noqa: E402
from amif.teachers.open_clip import OpenCLIPTeacher  # noqa: E402
from amif.testing.biomedclip import write_biomedclip  # noqa: E402

from helpers import write_tiny_clip  # noqa: E402

WORDS = "chest x ray lung heart brain ct mri scan the of a with normal study findings no acute process".split()
CAPTIONS = [
    "chest x ray with no acute process",
    "brain mri",
    "the heart of a normal study " * 12,  # longer than the teachers' max_length: truncated
    "ct scan of the lung with findings",
    "brain mri",  # a repeat: the memo encodes it once
]


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)  # conftest restores the count after each test


@pytest.fixture(scope="module")
def teachers(module_tmp):
    clip_dir = module_tmp("clip")
    write_tiny_clip(clip_dir, ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + WORDS, image_size=32, num_layers=2)
    bc_dir = module_tmp("biomedclip")
    write_biomedclip(bc_dir, width=64, layers=1, text_width=64, text_layers=1)
    return {
        "clip": CLIPTeacher.from_folder(clip_dir, max_length=16),
        "open_clip": OpenCLIPTeacher.from_folder(bc_dir, max_length=16),
        "caption": CaptionSimilarityTeacher.from_package(max_length=16, batch_size=2),
    }


@pytest.mark.parametrize("kind", ["clip", "open_clip", "caption"])
def test_worker_tokens_equal_one_padded_call(teachers, kind):
    teacher = teachers[kind]
    tokenize = teacher.caption_tokenizer()
    encodings = [tokenize(c) for c in CAPTIONS]
    padded = teacher.pad(encodings)
    reference = teacher.tokenizer(CAPTIONS, padding=True, truncation=True, max_length=teacher.max_length,
                                  return_tensors="pt")
    assert padded["input_ids"].shape[1] == 16  # the long caption was cut to max_length
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(padded[key], reference[key]), key
    from_tokens = teacher.batch_text_embeddings({"caption": CAPTIONS, "teacher_tokens": encodings})
    from_text = teacher.batch_text_embeddings({"caption": CAPTIONS})
    assert torch.equal(from_tokens, from_text)
    assert torch.allclose(from_tokens.norm(dim=-1), torch.ones(len(CAPTIONS)), atol=1e-5)


def test_memo_from_worker_tokens_equals_memo_from_text(teachers):
    inner = teachers["caption"]
    tokenize = inner.caption_tokenizer()
    with_tokens, with_text = MemoCaptionTeacher(inner), MemoCaptionTeacher(inner)
    batch = {"caption": CAPTIONS, "teacher_tokens": [tokenize(c) for c in CAPTIONS]}
    a = with_tokens.teacher_embeddings(batch)[2]
    b = with_text.teacher_embeddings({"caption": CAPTIONS})[2]
    assert torch.equal(a, b)
    assert len(with_tokens._memo) == len(set(CAPTIONS))
    assert torch.equal(a[1], a[4])


def test_collate_makes_teacher_tokens_in_a_worker(teachers):
    teacher = teachers["caption"]
    student = teachers["clip"].tokenizer
    items = [{"caption": c, "id": str(i)} for i, c in enumerate(CAPTIONS)]
    collate = PretrainCollate(student, max_length=12, teacher_tokenizer=teacher.caption_tokenizer())
    in_worker = next(iter(DataLoader(items, batch_size=len(items), collate_fn=collate, num_workers=1)))
    here = collate(items)
    assert in_worker["teacher_tokens"] == here["teacher_tokens"]
    assert torch.equal(in_worker["input_ids"], here["input_ids"])
    assert "teacher_tokens" not in PretrainCollate(student, max_length=12)(items)


def test_pad_encodings_sides_and_fill():
    enc = [{"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]}, {"input_ids": [8], "attention_mask": [1]}]
    right = pad_encodings(enc, pad_id=0)
    left = pad_encodings(enc, pad_id=9, side="left")
    assert right["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert right["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert left["input_ids"].tolist() == [[5, 6, 7], [9, 9, 8]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError):
        pad_encodings([], pad_id=0)
