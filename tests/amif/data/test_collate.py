"""Collation (amif.data.collate): the token ids come from the DataLoader workers, equal to the model's
own tokenisation of the normalised questions and answers."""

import torch
from torch.utils.data import DataLoader

from amif.answers import normalize_answer
from amif.data.collate import VQACollate, collate_vqa
from amif.models.text_encoder import load_tokenizer

QUESTIONS = ["what modality is this?", "is there a lesion in the left lung?", "how many lesions are there?"]
ANSWERS = ["X-Ray", "Yes.", "a very long answer that the decoder's length limit truncates somewhere here"]


def _items():
    return [{"pixel_values": torch.full((3, 8, 8), float(i)), "image": f"img{i}.png", "question": q, "answer": a,
             "qid": str(i), "answer_type": "OPEN", "question_type": "t"}
            for i, (q, a) in enumerate(zip(QUESTIONS, ANSWERS))]


def test_workers_tokenise_as_the_main_process_did():
    tokenizer = load_tokenizer("minilm")
    collate = VQACollate(tokenizer, max_question_length=8, max_answer_length=6)
    loader = DataLoader(_items(), batch_size=3, num_workers=1, collate_fn=collate)
    (batch,) = list(loader)
    ref = collate_vqa(_items())
    q = tokenizer(QUESTIONS, padding="longest", truncation=True, max_length=8, return_tensors="pt")
    a = tokenizer([normalize_answer(x) for x in ANSWERS], padding="longest", truncation=True, max_length=6,
                  return_tensors="pt")
    assert torch.equal(batch["question_ids"], q["input_ids"]) and torch.equal(batch["question_mask"], q["attention_mask"])
    assert torch.equal(batch["answer_ids"], a["input_ids"]) and torch.equal(batch["answer_mask"], a["attention_mask"])
    assert batch["question_ids"].shape[1] == 8 and batch["answer_ids"].shape[1] == 6  # truncated, padded to longest
    assert batch["answer"] == ANSWERS  # the raw answers stay for the metrics
    assert torch.equal(batch["pixel_values"], ref["pixel_values"]) and torch.equal(batch["image_index"], ref["image_index"])


def _pretrain_items(negatives):
    return [{"image1": torch.zeros(3, 4, 4), "image2": torch.zeros(3, 4, 4), "caption": f"caption {i}",
             "id": str(i), **({} if n is False else {"negative_caption": n})} for i, n in enumerate(negatives)]


def test_pretrain_collate_counterfactual_captions():
    from amif.data.collate import PretrainCollate, caption_key

    tokenizer = load_tokenizer("minilm")
    collate = PretrainCollate(tokenizer, max_length=16)
    out = collate(_pretrain_items(["a lesion on the right", None, False]))
    assert out["negative_valid"].tolist() == [True, False, False]  # None and a missing key: no pair
    ref = tokenizer(["a lesion on the right", "", ""], padding="longest", return_tensors="pt")
    assert torch.equal(out["negative_ids"], ref["input_ids"]) and torch.equal(out["negative_mask"], ref["attention_mask"])
    assert out["negative_key"][0] == caption_key("a lesion on the right")
    # a batch without any counterfactual caption has none of the keys
    assert not any(k.startswith("negative_") for k in collate(_pretrain_items([None, False])))
