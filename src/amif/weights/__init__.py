"""Pretrained weights from local files and folders, checked before they are loaded.

- :mod:`amif.weights.files`: reading safetensors, ``torch.save``, TorchScript and sharded folders;
- :mod:`amif.weights.checks`: a state dict's shapes and keys against a model;
- :mod:`amif.weights.clip_vision`: CLIP image encoders (transformers folders, OpenAI checkpoints);
- :mod:`amif.weights.bert`: BERT-family text encoders and their masked-LM head.

amif never downloads anything at run time.
"""

from amif.weights.bert import check_text_encoder_folder, load_bert_mlm_head, load_text_encoder_folder
from amif.weights.checks import check_state_dict
from amif.weights.clip_vision import (
    interpolate_position_embedding,
    load_clip_vision,
    load_clip_vision_model,
    openai_visual_to_hf,
)

__all__ = [
    "check_state_dict",
    "check_text_encoder_folder",
    "interpolate_position_embedding",
    "load_bert_mlm_head",
    "load_clip_vision",
    "load_clip_vision_model",
    "load_text_encoder_folder",
    "openai_visual_to_hf",
]
