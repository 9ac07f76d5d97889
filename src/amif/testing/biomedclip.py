"""A random BiomedCLIP checkpoint in the released open_clip folder layout, and reference forwards over it.

``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224`` ships ``open_clip_config.json``,
``open_clip_pytorch_model.bin`` (``torch.save`` of the state dict: ``visual.trunk.*`` of a timm ViT,
``visual.head.proj.weight``, ``text.transformer.*`` of a BertModel, ``text.proj.0/2.weight``,
``logit_scale``) and the BERT tokenizer files. :func:`write_biomedclip` writes the same files with the
same key names and tensor layouts, at any (small) size. The default sizes keep the towers tiny; with
``width=768, layers=12, patch=16, image_size=224, text_width=768, text_layers=12, embed_dim=512,
max_positions=512`` and a 30k vocabulary it has BiomedCLIP's shapes.

:func:`reference_image` and :func:`reference_text` compute the embeddings of such a state dict from the
ViT and BERT equations directly, so that a loader of the released files can be checked against them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = SPECIAL + ["the", "a", "chest", "x", "##ray", "shows", "no", "acute", "lung", "heart", "is", "normal",
                   "size", "left", "right", "effusion", "opacity", "ct", "of", "abdomen", "mri", "brain", "with",
                   "mass", "lesion", "small", "large", "pleural", "fracture", "rib", "figure", "image", "and",
                   "in", "on", "at", ".", ",", "1", "2"]


def _r(gen: torch.Generator, *shape: int, std: float = 0.02, mean: float = 0.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen) * std + mean


def biomedclip_state_dict(*, width: int, layers: int, patch: int, image_size: int, text_width: int,
                          text_layers: int, embed_dim: int, vocab: int, max_positions: int, seed: int = 0,
                          position_ids: bool = True) -> dict[str, torch.Tensor]:
    """Random tensors under BiomedCLIP's key names and shapes. Norm gains sit near 1 and biases are
    non-zero, so a loader that drops or swaps any of them changes the embeddings."""
    g = torch.Generator().manual_seed(seed)
    s: dict[str, torch.Tensor] = {}
    t, grid = "visual.trunk.", image_size // patch
    s[f"{t}cls_token"] = _r(g, 1, 1, width, std=0.5)
    s[f"{t}pos_embed"] = _r(g, 1, 1 + grid * grid, width, std=0.5)
    s[f"{t}patch_embed.proj.weight"] = _r(g, width, 3, patch, patch, std=0.1)
    s[f"{t}patch_embed.proj.bias"] = _r(g, width, std=0.1)

    def norm(key: str, n: int) -> None:
        s[f"{key}.weight"] = _r(g, n, std=0.1, mean=1.0)
        s[f"{key}.bias"] = _r(g, n, std=0.1)

    def lin(key: str, out: int, inp: int, bias: bool = True) -> None:
        s[f"{key}.weight"] = _r(g, out, inp, std=1.0 / math.sqrt(inp))
        if bias:
            s[f"{key}.bias"] = _r(g, out, std=0.1)

    for i in range(layers):
        b = f"{t}blocks.{i}."
        norm(f"{b}norm1", width)
        lin(f"{b}attn.qkv", 3 * width, width)
        lin(f"{b}attn.proj", width, width)
        norm(f"{b}norm2", width)
        lin(f"{b}mlp.fc1", 4 * width, width)
        lin(f"{b}mlp.fc2", width, 4 * width)
    norm(f"{t}norm", width)
    lin("visual.head.proj", embed_dim, width, bias=False)

    x = "text.transformer."
    s[f"{x}embeddings.word_embeddings.weight"] = _r(g, vocab, text_width, std=0.5)
    s[f"{x}embeddings.position_embeddings.weight"] = _r(g, max_positions, text_width, std=0.5)
    s[f"{x}embeddings.token_type_embeddings.weight"] = _r(g, 2, text_width, std=0.5)
    norm(f"{x}embeddings.LayerNorm", text_width)
    if position_ids:  # an obsolete buffer that checkpoints saved before transformers 4.31 still hold
        s[f"{x}embeddings.position_ids"] = torch.arange(max_positions).unsqueeze(0)
    for i in range(text_layers):
        b = f"{x}encoder.layer.{i}."
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            lin(b + part, text_width, text_width)
        norm(b + "attention.output.LayerNorm", text_width)
        lin(b + "intermediate.dense", 4 * text_width, text_width)
        lin(b + "output.dense", text_width, 4 * text_width)
        norm(b + "output.LayerNorm", text_width)
    hidden = (text_width + embed_dim) // 2
    lin("text.proj.0", hidden, text_width, bias=False)
    lin("text.proj.2", embed_dim, hidden, bias=False)
    s["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return s


def write_biomedclip(folder: Path, *, width: int = 64, layers: int = 1, patch: int = 8, image_size: int = 32,
                     text_width: int = 64, text_layers: int = 1, embed_dim: int = 32, words: list[str] | None = None,
                     max_positions: int = 64, context_length: int = 256, seed: int = 0,
                     config_edits: dict | None = None) -> dict[str, torch.Tensor]:
    """Write the six released files into ``folder``; returns the state dict that was saved.

    Attention heads are 64 wide as in BiomedCLIP (``width=128`` gives 2 heads). ``config_edits`` are
    merged into ``model_cfg`` (one level deep for ``vision_cfg`` / ``text_cfg``), to write bad configs.
    """
    from transformers import BertTokenizerFast

    words = list(words or WORDS)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = biomedclip_state_dict(width=width, layers=layers, patch=patch, image_size=image_size,
                                  text_width=text_width, text_layers=text_layers, embed_dim=embed_dim,
                                  vocab=len(words), max_positions=max_positions, seed=seed)
    model_cfg = {
        "embed_dim": embed_dim,
        "vision_cfg": {"timm_model_name": f"vit_base_patch{patch}_{image_size}", "timm_model_pretrained": False,
                       "timm_pool": "", "timm_proj": "linear", "image_size": image_size},
        "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                     "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                     "hf_proj_type": "mlp", "hf_pooler_type": "cls_last_hidden_state_pooler",
                     "context_length": context_length},
    }
    for key, value in (config_edits or {}).items():
        if isinstance(value, dict) and isinstance(model_cfg.get(key), dict):
            model_cfg[key].update(value)
        else:
            model_cfg[key] = value
    config = {"model_cfg": model_cfg,
              "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                                 "std": [0.26862954, 0.26130258, 0.27577711]}}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    torch.save(state, folder / "open_clip_pytorch_model.bin")

    (folder / "vocab.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
    try:
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)  # transformers 5
    except TypeError:  # pragma: no cover - transformers 4
        tok = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tok.backend_tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "do_lower_case": True, "model_max_length": 1000000000000000019884624838656, "tokenizer_class": "BertTokenizer",
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
    }, indent=2), encoding="utf-8")
    (folder / "special_tokens_map.json").write_text(json.dumps({
        "unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]",
    }, indent=2), encoding="utf-8")
    return state


# Independent forward passes over the released key names, to check a loader against: plain tensor
# algebra, no SDPA, no timm or open_clip code.

def _ln(x, s, key, eps):
    return torch.nn.functional.layer_norm(x, x.shape[-1:], s[f"{key}.weight"], s[f"{key}.bias"], eps)


def _lin(x, s, key):
    y = x @ s[f"{key}.weight"].T
    return y + s[f"{key}.bias"] if f"{key}.bias" in s else y


def _attention(q, k, v, heads, key_mask=None):
    """softmax(Q Kᵀ / √d) V per head, written out (no SDPA)."""
    b, n, d = q.shape
    split = [t.view(b, -1, heads, d // heads).transpose(1, 2) for t in (q, k, v)]
    scores = split[0] @ split[1].transpose(-1, -2) / math.sqrt(d // heads)
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
    return (scores.softmax(-1) @ split[2]).transpose(1, 2).reshape(b, n, d)


def reference_image(s: dict[str, torch.Tensor], pixels: torch.Tensor, heads: int) -> torch.Tensor:
    """Image embeddings of BiomedCLIP state dict ``s``, by the timm ViT equations written out.

    Pre-norm blocks (LayerNorm eps 1e-6, exact GELU, fused qkv) -> normed class token -> ``head.proj`` -> L2.
    """
    t = "visual.trunk."
    w = s[f"{t}patch_embed.proj.weight"]
    p = w.shape[-1]
    b, _, hh, ww = pixels.shape
    patches = pixels.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(b, -1, 3 * p * p)
    x = patches @ w.reshape(w.shape[0], -1).T + s[f"{t}patch_embed.proj.bias"]
    x = torch.cat([s[f"{t}cls_token"].expand(b, -1, -1), x], 1) + s[f"{t}pos_embed"]
    i = 0
    while f"{t}blocks.{i}.norm1.weight" in s:
        k = f"{t}blocks.{i}."
        q, kk, v = _lin(_ln(x, s, k + "norm1", 1e-6), s, k + "attn.qkv").chunk(3, dim=-1)
        x = x + _lin(_attention(q, kk, v, heads), s, k + "attn.proj")
        h = _lin(_ln(x, s, k + "norm2", 1e-6), s, k + "mlp.fc1")
        x = x + _lin(0.5 * h * (1 + torch.erf(h / math.sqrt(2))), s, k + "mlp.fc2")
        i += 1
    cls = _ln(x, s, f"{t}norm", 1e-6)[:, 0]
    return torch.nn.functional.normalize(cls @ s["visual.head.proj.weight"].T, dim=-1)


def reference_text(s: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor, heads: int) -> torch.Tensor:
    """Text embeddings of BiomedCLIP state dict ``s``, by the BERT equations written out.

    Post-norm layers (LayerNorm eps 1e-12, exact GELU) -> last hidden state at [CLS] -> Linear, GELU,
    Linear -> L2. ``mask`` is the attention mask of ``ids`` (1 = real token).
    """
    t = "text.transformer."
    n = ids.shape[1]
    x = (s[f"{t}embeddings.word_embeddings.weight"][ids] + s[f"{t}embeddings.position_embeddings.weight"][:n]
         + s[f"{t}embeddings.token_type_embeddings.weight"][0])
    x = _ln(x, s, f"{t}embeddings.LayerNorm", 1e-12)
    i = 0
    while f"{t}encoder.layer.{i}.attention.self.query.weight" in s:
        k = f"{t}encoder.layer.{i}."
        q, kk, v = (_lin(x, s, k + f"attention.self.{n}") for n in ("query", "key", "value"))
        x = _ln(x + _lin(_attention(q, kk, v, heads, mask.bool()), s, k + "attention.output.dense"), s,
                k + "attention.output.LayerNorm", 1e-12)
        h = _lin(x, s, k + "intermediate.dense")
        x = _ln(x + _lin(0.5 * h * (1 + torch.erf(h / math.sqrt(2))), s, k + "output.dense"), s,
                k + "output.LayerNorm", 1e-12)
        i += 1
    h = x[:, 0] @ s["text.proj.0.weight"].T
    h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))
    return torch.nn.functional.normalize(h @ s["text.proj.2.weight"].T, dim=-1)
