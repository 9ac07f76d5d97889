"""``amif.testing.paper_size``: the tiny files load through amif's own loaders, values intact."""

from __future__ import annotations

import torch

from amif.teachers import load_teacher
from amif.testing.paper_size import (
    BERT_TINY,
    VIT_TINY,
    openai_vit_state_dict,
    paper_overrides,
    write_paper_files,
)
from amif.weights.bert import load_bert_mlm_head, load_text_encoder_folder
from amif.weights.clip_vision import load_clip_vision


def test_tiny_paper_files_load_with_their_values(tmp_path):
    files = write_paper_files(tmp_path, tiny=True)
    sd = openai_vit_state_dict(tiny=True)
    assert all(k.startswith("visual.") and v.dtype == torch.float16 for k, v in sd.items())  # as released

    config, vision = load_clip_vision(files.vit)
    assert (config.hidden_size, config.num_hidden_layers, config.patch_size) == (64, 2, 8)
    cls = next(v for k, v in vision.items() if k.endswith("embeddings.class_embedding"))
    torch.testing.assert_close(cls, sd["visual.class_embedding"].float())

    model, tokenizer = load_text_encoder_folder(files.bert)
    assert model.config.hidden_size == BERT_TINY["hidden_size"] and len(tokenizer) == BERT_TINY["vocab_size"]
    assert load_bert_mlm_head(files.bert)  # the masked-LM head is in the file, as Bio_ClinicalBERT ships it

    teacher = load_teacher(files.teacher)
    assert teacher.image_size == 32
    assert teacher.encode_texts(["is there a lesion in the lung ?"]).shape == (1, 16)


def test_paper_overrides_point_at_the_files_and_shrink_tiny_ones(tmp_path):
    files = write_paper_files(tmp_path, tiny=True, teacher=False)
    pre, fine = paper_overrides(files, pretraining=True), paper_overrides(files, pretraining=False)
    assert f"model.image_encoder.pretrained={files.vit}" in fine and f"model.text_encoder.path={files.bert}" in fine
    assert f"losses.teacher={files.teacher}" in pre and not any(o.startswith("losses.") for o in fine)
    assert "model.image_encoder.hidden_size=64" in fine and VIT_TINY["width"] == 64
    files.tiny = False
    assert not any(o.startswith("model.fusion") for o in paper_overrides(files, pretraining=False))
