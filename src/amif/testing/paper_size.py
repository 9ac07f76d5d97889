"""Paper-size weight files with random values in the released on-disk formats, written with no download.

The paper configs (``configs/paper/*``) point at three weight locations; these writers produce each one:

* the image encoder: a CLIP ViT-B/16 state dict in OpenAI's checkpoint layout (``visual.*`` keys, fp16,
  ``torch.save``), which amif's loader converts, cuts to 11 blocks and resizes to 288 px;
* the text encoder: a BERT-base transformers folder (``config.json``, ``model.safetensors`` with the
  masked-LM head, ``vocab.txt``), laid out as Bio_ClinicalBERT is;
* the teacher: a transformers CLIP folder (:func:`write_clip_teacher`).

:func:`paper_overrides` points a paper config at them. ``tiny=True`` gives the same files at a few
thousand parameters, so that the scripts using them can be tested in seconds. :func:`pretrain_batch` and
:func:`vqa_batch` give random batches of the shapes a training step consumes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

# Bio_ClinicalBERT's vocabulary size (bert-base-cased); config.json of BERT-base otherwise
BERT_BASE = dict(vocab_size=28996, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512)
BERT_TINY = dict(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=48, max_position_embeddings=64)
VIT_B16 = dict(width=768, layers=12, heads=12, patch=16, grid=14, embed=512)
VIT_TINY = dict(width=64, layers=2, heads=1, patch=8, grid=4, embed=16)  # OpenAI layout: 64 per head

WORDS = ("is there a lesion in the lung liver brain chest ct mri xray scan normal abnormal yes no left right "
         "which organ shows what modality plane axial coronal how many nodules size of mass image this").split()


@dataclasses.dataclass
class PaperFiles:
    """The three weight locations a paper config points at."""

    vit: Path
    bert: Path
    teacher: Path
    tiny: bool


def _vocab(size: int) -> list[str]:
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = special + [w for w in dict.fromkeys(WORDS)] + ["?", ".", ","]
    return words + [f"tok{i}" for i in range(size - len(words))]


def write_bert_folder(folder: Path, *, tiny: bool = False, weights: bool = True, seed: int = 0) -> Path:
    """A BERT folder with random weights (and an MLM head, as Bio_ClinicalBERT ships one) and a vocabulary."""
    from transformers import BertConfig, BertForPreTraining

    dims = BERT_TINY if tiny else BERT_BASE
    folder.mkdir(parents=True, exist_ok=True)
    config = BertConfig(**dims)
    if weights:
        torch.manual_seed(seed)
        BertForPreTraining(config).save_pretrained(folder)
    else:
        config.save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(_vocab(dims["vocab_size"])) + "\n", encoding="utf-8")
    return folder


def openai_vit_state_dict(*, tiny: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random CLIP visual tower in the OpenAI checkpoint layout (fp16, as released)."""
    d = VIT_TINY if tiny else VIT_B16
    w, mlp, g = d["width"], 4 * d["width"], torch.Generator().manual_seed(seed)

    def rnd(*shape: int, std: float = 0.02) -> torch.Tensor:
        return (torch.randn(*shape, generator=g) * std).half()

    def ln(name: str) -> dict[str, torch.Tensor]:
        return {f"{name}.weight": torch.ones(w, dtype=torch.half), f"{name}.bias": torch.zeros(w, dtype=torch.half)}

    sd = {"visual.conv1.weight": rnd(w, 3, d["patch"], d["patch"]), "visual.class_embedding": rnd(w),
          "visual.positional_embedding": rnd(d["grid"] ** 2 + 1, w), "visual.proj": rnd(w, d["embed"]),
          **ln("visual.ln_pre"), **ln("visual.ln_post")}
    for i in range(d["layers"]):
        p = f"visual.transformer.resblocks.{i}."
        sd.update({p + "attn.in_proj_weight": rnd(3 * w, w), p + "attn.in_proj_bias": rnd(3 * w),
                   p + "attn.out_proj.weight": rnd(w, w), p + "attn.out_proj.bias": rnd(w),
                   p + "mlp.c_fc.weight": rnd(mlp, w), p + "mlp.c_fc.bias": rnd(mlp),
                   p + "mlp.c_proj.weight": rnd(w, mlp), p + "mlp.c_proj.bias": rnd(w),
                   **ln(p + "ln_1"), **ln(p + "ln_2")})
    return sd


def write_clip_teacher(folder: Path, *, tiny: bool = False, seed: int = 0) -> Path:
    """A random transformers CLIP folder with a BERT word-piece tokenizer, as the soft-label teacher.

    At full size it has BiomedCLIP's dimensions (ViT-B/16 at 224 px; a 12-layer, 768-wide text tower over
    256 tokens; 512-d embeddings), in the transformers CLIP layout.
    """
    from transformers import BertTokenizerFast, CLIPConfig, CLIPModel

    folder.mkdir(parents=True, exist_ok=True)
    words = _vocab(BERT_TINY["vocab_size"] if tiny else 30522)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))
    if tiny:
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
        vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2)
    else:
        text = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12)
        vision = dict(image_size=224, patch_size=16, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                      num_attention_heads=12)
    cfg = CLIPConfig(text_config=dict(vocab_size=len(words), max_position_embeddings=256, pad_token_id=0,
                                      bos_token_id=2, eos_token_id=3, **text),
                     vision_config=vision, projection_dim=16 if tiny else 512)
    torch.manual_seed(seed)
    CLIPModel(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def write_paper_files(root: Path, *, tiny: bool = False, teacher: bool = True) -> PaperFiles:
    """Write the image-encoder checkpoint, the BERT folder and (optionally) the teacher under ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    vit = root / "ViT-B-16.pt"
    torch.save(openai_vit_state_dict(tiny=tiny), vit)
    bert = write_bert_folder(root / "bert", tiny=tiny)
    tfolder = write_clip_teacher(root / "teacher", tiny=tiny) if teacher else root / "teacher"
    return PaperFiles(vit, bert, tfolder, tiny)


# Turns the paper's model section into one of a few thousand parameters (for --tiny runs).
TINY_MODEL = [
    "model.image_encoder.image_size=32", "model.image_encoder.patch_size=8", "model.image_encoder.hidden_size=64",
    "model.image_encoder.num_layers=1", "model.image_encoder.num_heads=1", "model.image_encoder.intermediate_size=256",
    "model.fusion.hidden_size=32", "model.fusion.num_layers=1", "model.fusion.num_heads=2",
    "model.fusion.intermediate_size=64", "model.gca.num_heads=2", "model.gca.intermediate_size=64",
    "model.decoder.cross_attention_from=1",
]


def paper_overrides(files: PaperFiles, *, pretraining: bool) -> list[str]:
    """Command-line overrides that point a paper config at ``files`` (and shrink it when they are tiny).

    Pre-training configs also get the teacher folder; fine-tuning configs have no ``losses`` section.
    """
    out = [f"model.image_encoder.pretrained={files.vit}", f"model.text_encoder.path={files.bert}"]
    if pretraining:
        out += [f"losses.teacher={files.teacher}", "losses.teacher_trust_remote_code=false"]
    return out + (TINY_MODEL if files.tiny else [])


def pretrain_batch(model: Any, teacher: Any, batch_size: int, *, seed: int = 0,
                   caption_words: int = 40) -> dict[str, Any]:
    """A collated pre-training batch of random images and captions, with the teacher's views."""
    from amif.data.collate import PretrainCollate

    g = torch.Generator().manual_seed(seed)
    size = model.image_encoder.image_size
    items = []
    for i in range(batch_size):
        words = [WORDS[int(j)] for j in torch.randint(len(WORDS), (caption_words,), generator=g)]
        item = {"image1": torch.randn(3, size, size, generator=g), "image2": torch.randn(3, size, size, generator=g),
                "caption": " ".join(words), "id": str(i), "index": i}
        if teacher is not None and teacher.uses_images:
            ts = teacher.image_size
            item["teacher_image1"] = torch.randn(3, ts, ts, generator=g)
            item["teacher_image2"] = torch.randn(3, ts, ts, generator=g)
        items.append(item)
    return PretrainCollate(model.tokenizer, max_length=120)(items)


def vqa_batch(model: Any, batch_size: int, *, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random images with questions and answers tokenised as in fine-tuning."""
    g = torch.Generator().manual_seed(seed)
    size = model.image_encoder.image_size
    questions = [f"is there a lesion in the {WORDS[7 + i % 4]} of this image ?" for i in range(batch_size)]
    answers = [model.answer_candidates[i % len(model.answer_candidates)] for i in range(batch_size)]
    q, qm = model.tokenize_questions(questions)
    a, am = model.tokenize_answers(answers)
    return {"pixel_values": torch.randn(batch_size, 3, size, size, generator=g), "question_ids": q,
            "question_mask": qm, "answer_ids": a, "answer_mask": am}


def candidate_answers(n: int) -> list[str]:
    """``n`` distinct answers of one to three words, like a VQA candidate list."""
    out = ["yes", "no"] + [f"{a} {b}" for a in WORDS for b in WORDS if a != b]
    return out[:n]
