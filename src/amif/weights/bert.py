"""BERT-family text-encoder weights from a local transformers folder (Bio_ClinicalBERT in the paper),
and the masked-LM head the answer decoder starts from."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from amif.errors import CheckpointError
from amif.weights.checks import shape_of
from amif.weights.files import hf_weight_file, index_shards, read_hf_weights

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = ["check_text_encoder_folder", "load_bert_mlm_head", "load_text_encoder_folder"]

# Any of these makes a usable tokenizer: fast tokenizer file, WordPiece vocab, BPE vocab+merges, SentencePiece.
_TOKENIZER_FILE_SETS = (("tokenizer.json",), ("vocab.txt",), ("vocab.json", "merges.txt"))
_SENTENCEPIECE_SUFFIX = ".model"


def check_text_encoder_folder(path: str | Path) -> Path:
    """Check that a transformers text-encoder folder has config.json, weights and tokenizer files.

    Raises ``CheckpointError`` naming the folder and what is missing; returns the folder as a ``Path``.
    """
    folder = Path(path)
    if not folder.exists():
        raise CheckpointError(f"{folder}: text-encoder folder not found")
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: the text encoder must be a transformers folder, not a file")
    problems = []
    if not (folder / "config.json").is_file():
        problems.append("config.json (the model configuration)")
    try:
        weight_file = hf_weight_file(folder)
    except CheckpointError as e:
        problems.append(str(e).removeprefix(f"{folder}: ").rstrip("."))
    else:
        if weight_file.name.endswith(".index.json"):
            index_shards(weight_file)
    has_tokenizer = any(all((folder / f).is_file() for f in files) for files in _TOKENIZER_FILE_SETS) or any(
        p.suffix == _SENTENCEPIECE_SUFFIX for p in folder.iterdir()
    )
    if not has_tokenizer:
        problems.append(
            "tokenizer files (tokenizer.json, or vocab.txt, or vocab.json + merges.txt, or a *.model)"
        )
    if problems:
        raise CheckpointError(f"{folder}: incomplete text-encoder folder; missing: " + "; ".join(problems))
    return folder


def load_text_encoder_folder(
    path: str | Path, **model_kwargs: Any
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(AutoModel, AutoTokenizer)`` from a local transformers folder (Bio_ClinicalBERT in the paper).

    Checks the folder first. Tensors of the wrong shape and missing tensors (other than the unused
    ``pooler``) raise ``CheckpointError`` listing them, instead of being silently re-initialised.
    ``model_kwargs`` go to ``AutoModel.from_pretrained`` (e.g. ``attn_implementation="sdpa"``).
    """
    from transformers import AutoModel, AutoTokenizer

    folder = check_text_encoder_folder(path)
    try:
        model, info = AutoModel.from_pretrained(
            str(folder),
            local_files_only=True,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **model_kwargs,
        )
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        raise CheckpointError(f"{folder}: cannot load the text encoder: {e}") from e
    wrong = [
        f"  {name}: expected {shape_of(want)}, got {shape_of(got)}" for name, got, want in info["mismatched_keys"]
    ]
    missing = sorted(
        k for k in info["missing_keys"] if not k.startswith("pooler.") and "position_ids" not in k
    )
    if wrong or missing:
        parts = [f"{folder}: the weights do not fit {type(model).__name__} built from config.json"]
        if wrong:
            parts.append(f"{len(wrong)} tensor(s) with the wrong shape:\n" + "\n".join(sorted(wrong)))
        if missing:
            parts.append(f"{len(missing)} missing tensor(s):\n" + "\n".join(f"  {n}" for n in missing))
        raise CheckpointError("\n".join(parts))
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"{folder}: cannot load the tokenizer: {e}") from e
    return model, tokenizer


# The masked-LM head of a ``BertForPreTraining`` / ``BertForMaskedLM`` checkpoint (Bio_ClinicalBERT ships
# one), as the answer decoder names it. The output matrix is tied to the word embeddings in both.
_MLM_HEAD_KEYS = {
    "cls.predictions.transform.dense.weight": "head_transform.weight",
    "cls.predictions.transform.dense.bias": "head_transform.bias",
    "cls.predictions.transform.LayerNorm.weight": "head_norm.weight",
    "cls.predictions.transform.LayerNorm.bias": "head_norm.bias",
    "cls.predictions.bias": "head_bias",
}
_LEGACY_LN = {"gamma": "weight", "beta": "bias"}  # names of TF-converted BERT checkpoints


def _mlm_key(name: str) -> str:
    name = re.sub(r"^(bert\.|model\.)", "", name)
    name = re.sub(r"LayerNorm\.(gamma|beta)$", lambda m: "LayerNorm." + _LEGACY_LN[m.group(1)], name)
    return "cls.predictions.bias" if name == "cls.predictions.decoder.bias" else name


def load_bert_mlm_head(path: str | Path) -> dict[str, Tensor]:
    """The MLM-head tensors of a BERT folder under the answer decoder's names (``head_transform.*``,
    ``head_norm.*``, ``head_bias``), or ``{}`` when the checkpoint has no MLM head (a plain ``BertModel``).

    ``BertLMHeadModel.from_pretrained`` (the published decoder) starts its LM head from these tensors;
    without them the decoder's head transform would start random. A head with some tensors but not all
    is an error naming the missing ones.
    """
    folder = Path(path)
    weight_file = hf_weight_file(folder)

    def select(names: list[str]) -> list[str]:
        return [n for n in names if _mlm_key(n) in _MLM_HEAD_KEYS]

    found = {_MLM_HEAD_KEYS[_mlm_key(k)]: v for k, v in read_hf_weights(weight_file, select).items()}
    if not found:
        return {}
    missing = sorted(set(_MLM_HEAD_KEYS.values()) - set(found))
    if missing:
        raise CheckpointError(f"{weight_file}: the masked-LM head is incomplete; missing the tensors for "
                              f"{', '.join(missing)}")
    return found
