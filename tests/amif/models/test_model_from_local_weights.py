"""The VQA model built from local pretrained folders (CLIP vision tower, BERT text encoder) in real
formats, and loaded again after those folders are gone."""

import shutil

import torch
from transformers import BertConfig, BertModel, CLIPVisionConfig, CLIPVisionModel

from amif.models.vqa import AMiFVQA
from amif_train.config import load_config

from helpers import MICRO, TINY_CONFIG


def _bert_folder(folder):
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=48, max_position_embeddings=32)).save_pretrained(folder)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "yes", "no", "lung", "is", "there", "a", "lesion", "?"]
    words += [f"w{i}" for i in range(40 - len(words))]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return folder


def _clip_folder(folder):
    torch.manual_seed(1)
    CLIPVisionModel(CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                                     image_size=32, patch_size=8)).save_pretrained(folder)
    return folder


def test_vqa_model_from_local_clip_and_bert(tmp_path):
    bert, clip = _bert_folder(tmp_path / "bert"), _clip_folder(tmp_path / "clip")
    cfg = load_config(TINY_CONFIG, MICRO + [
        f"model.image_encoder.pretrained={clip}", "model.image_encoder.image_size=48", "model.image_encoder.num_layers=2",
        f"model.text_encoder.path={bert}", "model.text_encoder.num_layers=null", "model.decoder.num_layers=null",
        "model.decoder.cross_attention_from=1",
    ]).model
    model = AMiFVQA(cfg, ["yes", "no"], ["yes", "no"])
    ref_bert = BertModel.from_pretrained(bert)
    ref_clip = CLIPVisionModel.from_pretrained(clip)
    # text encoder and decoder initialised from the BERT folder
    assert torch.equal(model.text_encoder.model.encoder.layer[1].output.dense.weight,
                       ref_bert.encoder.layer[1].output.dense.weight)
    assert torch.equal(model.decoder.layers[1].self_attn.value.weight,
                       ref_bert.encoder.layer[1].attention.self.value.weight)
    assert len(model.decoder.layers) == 2 and model.decoder.layers[0].cross_attn is None
    # image encoder: first 2 of 3 blocks, position embeddings resized from 4x4 to 6x6 (+ CLS)
    enc = model.image_encoder.model
    assert enc.config.num_hidden_layers == 2 and model.image_encoder.image_size == 48
    assert enc.embeddings.position_embedding.weight.shape == (37, 32)
    assert torch.equal(enc.encoder.layers[1].mlp.fc1.weight, ref_clip.encoder.layers[1].mlp.fc1.weight)
    q, qm = model.tokenize_questions(["is there a lesion?"])
    model.eval()
    px = torch.randn(1, 3, 48, 48)
    before = model.rank(px, q, qm)
    model.save_pretrained(tmp_path / "saved")
    shutil.rmtree(bert)
    shutil.rmtree(clip)
    loaded = AMiFVQA.from_pretrained(tmp_path / "saved").eval()
    after = loaded.rank(px, q, qm)
    assert torch.equal(before.indices, after.indices) and torch.allclose(before.probs, after.probs)
