"""Building and loading models: the functions behind ``amif.create_model``, ``amif.model_config`` and
``amif.load_model``. Only the standard library is imported here; torch and the models load on first call."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from amif.models.config import ModelConfig
    from amif.models.pretrain import AMiFPretrainModel
    from amif.models.vqa import AMiFVQA


def model_config(arch_or_path: str | Path, **overrides: Any) -> ModelConfig:
    """The model section named by ``arch_or_path`` with ``overrides`` merged over it, checked.

    ``arch_or_path`` is a registered name or a YAML file: an experiment file (its ``model`` section is
    used) or a bare model section; either may name an ``arch``. ``overrides`` are model-section keys
    given as nested mappings, e.g. ``image_encoder={"image_size": 64}, decoder={"rank_k": 8}``.
    """
    from amif.configuration import deep_merge, from_dict, read_yaml, resolve_arch
    from amif.models.config import ModelConfig, validate_model
    from amif.registry import list_models as names

    if str(arch_or_path) in names():
        section: dict[str, Any] = {"arch": str(arch_or_path)}
    elif str(arch_or_path).endswith((".yaml", ".yml")) or Path(arch_or_path).is_file():
        data = read_yaml(arch_or_path)
        section = data["model"] if isinstance(data.get("model"), dict) else data
    else:
        from amif.errors import ConfigError

        raise ConfigError(f"unknown architecture {str(arch_or_path)!r} (neither a registered name nor a YAML "
                          f"file); known: {', '.join(names())}")
    section = deep_merge(resolve_arch(section, "model"), overrides)
    cfg = from_dict(ModelConfig, section, "model")
    validate_model(cfg)
    return cfg


def create_model(
    arch_or_path: str | Path,
    *,
    answers: Sequence[str] = ("yes", "no"),
    vocabulary: Sequence[str] | None = None,
    load_pretrained: bool = True,
    **overrides: Any,
) -> AMiFVQA:
    """A new VQA model of architecture ``arch_or_path`` (see :func:`model_config` for it and the
    ``overrides``), e.g. ``create_model("amif-tiny", image_encoder={"image_size": 64})``.

    ``answers`` are the candidates it ranks; ``vocabulary`` the words the GCA reads (default: the words
    of the answers). ``load_pretrained=False`` leaves every weight randomly initialised (the encoders'
    architectures still come from their folders).
    """
    from amif.models.vqa import AMiFVQA

    cfg = model_config(arch_or_path, **overrides)
    words = list(vocabulary) if vocabulary is not None else list(dict.fromkeys(w for a in answers for w in a.split()))
    return AMiFVQA(cfg, list(answers), words, load_pretrained=load_pretrained)


def load_model(folder: str | Path, map_location: str | torch.device = "cpu") -> AMiFVQA | AMiFPretrainModel:
    """A trained model from ``folder``: a VQA model folder (``amif finetune``'s ``OUTPUT/model``), a
    fine-tuning run folder holding one (``OUTPUT``), or a pre-training model folder
    (:class:`~amif.models.pretrain.AMiFPretrainModel`). Weights are read from safetensors only; a
    folder that is none of these is a :class:`~amif.errors.CheckpointError` naming what is missing."""
    from amif.models.pretrain import CONFIG as PRETRAIN_CONFIG
    from amif.models.vqa import META, AMiFVQA

    folder = Path(folder)
    if (folder / "model" / META).is_file() and not (folder / META).is_file():
        folder = folder / "model"
    if (folder / PRETRAIN_CONFIG).is_file() and not (folder / META).is_file():
        from amif.models.pretrain import AMiFPretrainModel

        return AMiFPretrainModel.load(folder, map_location=map_location)
    return AMiFVQA.from_pretrained(folder, map_location=map_location)  # its errors name what is missing
