"""The AMiF pre-training model: unified alignment (global contrastive + OT) and hard-negative ITM.

The encoders and the co-attention fusion are the same classes, under the same attribute names, as in
:class:`amif.models.vqa.AMiFVQA`, so a saved pre-training folder initialises a VQA model through
``AMiFVQA.load_encoder_weights``. Losses (docs/method.md, "Pre-training stages and total loss"), per
local batch of ``B`` pairs and ``N = world_size * B`` gathered pairs:

* ``itgc``: image-text soft-label contrastive loss, both directions;
* ``imvc``: view 1 vs view 2 image-image contrastive loss, both directions;
* ``utgc``: text-text relational distillation;
* ``itc_cf`` (``losses.itc_counterfactuals``): each local image against its caption and one of the
  caption's counterfactual twins (``negative_ids``), a two-way cross-entropy, times
  ``counterfactual_weight``;
* ``wpa`` (stage >= 1): optimal-transport word-patch distance between the fused tokens of the positive
  pairs, times ``wpa_weight``;
* ``itm`` (stage >= 1): matching / not matching over 3B pairs: the B positives, one hard-negative text per
  image and one hard-negative image per text, drawn from the whole gathered batch; with
  ``losses.itm_counterfactuals`` also each local image with its counterfactual caption
  (``negative_ids``, from the record's ``negative_captions``) as not matching, up to B more pairs (the
  items without one are left out of the loss), so that the fusion must compare the caption's details,
  such as the lesion's side, with the image rather than tell captions apart by their topic.

Global features are the L2-normalised projections (``fusion.image_proj`` / ``fusion.text_proj``) of the
pooled tokens (CLS by default, ``losses.image_pooling`` / ``text_pooling``); the same projections feed the
co-attention layers. In stage >= 1 the encoders are frozen. Captions arrive tokenised
(:class:`amif.data.collate.PretrainCollate`, in the DataLoader workers).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file
from torch import Tensor, nn
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, PreTrainedTokenizerBase

from amif.configuration import from_dict, to_dict
from amif.distributed import gather_no_grad, gather_with_grad, positive_index, world_info
from amif.errors import CheckpointError
from amif.losses import (
    LearnableTemperature,
    counterfactual_contrast,
    image_image_loss,
    image_text_loss,
    itm_loss,
    sample_hard_negatives,
    text_text_loss,
    wpa_loss,
)
from amif.losses.config import LossConfig
from amif.models.coattention import CoAttentionFusion
from amif.models.config import ModelConfig
from amif.models.image_encoder import ImageEncoder
from amif.models.text_encoder import TextEncoder, load_tokenizer
from amif.safe_io import load_safetensors
from amif.weights.checks import check_state_dict

__all__ = [
    "AMiFPretrainModel",
    "LOSS_NAMES",
    "TEMPERATURES",
    "wpa_text_mask",
]

FORMAT = "amif-pretrain"
WEIGHTS = "model.safetensors"
CONFIG = "pretrain_config.yaml"
LOSS_NAMES = ("itgc", "imvc", "utgc", "wpa", "itm")
TEMPERATURES = ("temperature_itc", "temperature_imv", "temperature_utt")

TeacherEmbeddings = tuple[Tensor, Tensor, Tensor]


def wpa_text_mask(attention_mask: Tensor) -> Tensor:
    """Text positions that take part in word-patch alignment: real tokens except [CLS] (position 0) and
    [SEP] (the last real token). ``attention_mask [B, L]`` -> bool ``[B, L]``."""
    mask = attention_mask.bool().clone()
    b, length = mask.shape
    last = (mask.long().sum(dim=1) - 1).clamp(min=0)
    rows = torch.arange(b, device=mask.device)
    mask[rows, last] = False
    mask[:, 0] = False
    return mask


def _pad_to_global_length(ids: Tensor, mask: Tensor, pad_id: int, fixed: int | None = None) -> tuple[Tensor, Tensor]:
    """Pad the local token batch to one length on every process (gathers need equal shapes): ``fixed``
    when given (no communication, no host synchronisation), else the longest over all processes."""
    _, world = world_info()
    if world == 1:
        return ids, mask
    if fixed is not None:
        if ids.shape[1] > fixed:
            raise ValueError(f"captions of {ids.shape[1]} tokens are longer than the fixed length {fixed}")
        length = fixed
    else:
        longest = torch.tensor([ids.shape[1]], device=ids.device, dtype=torch.long)
        dist.all_reduce(longest, op=dist.ReduceOp.MAX)
        length = int(longest.item())
    extra = length - ids.shape[1]
    if extra > 0:
        ids = F.pad(ids, (0, extra), value=pad_id)
        mask = F.pad(mask, (0, extra), value=0)
    return ids, mask


class AMiFPretrainModel(nn.Module):
    """Image encoder, text encoder, co-attention fusion, three temperatures and the ITM head.

    ``forward(batch, teacher, ...)`` returns the dict of enabled losses (see the module docstring).
    :meth:`set_stage` freezes what the stage does not train: in stage 0 the co-attention layers and the
    ITM head (unused), in stage >= 1 the encoders (``requires_grad=False``, kept in eval mode). Modules
    of switched-off losses are frozen too, so DDP never sees an unused trainable parameter.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        losses: LossConfig | None = None,
        *,
        stage: int = 0,
        tokenizer: PreTrainedTokenizerBase | None = None,
        text_config: Any = None,
        vision_config: CLIPVisionConfig | None = None,
        load_pretrained: bool = True,
        train_encoders: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        # encoders this model trains: None = the paper's schedule (both in stage 0, none after)
        self.train_encoders = None if train_encoders is None else frozenset(train_encoders)
        if self.train_encoders is not None and not self.train_encoders <= {"image", "text"}:
            raise ValueError(f"train_encoders takes 'image' and/or 'text', got {sorted(self.train_encoders)}")
        self.losses_cfg = losses or LossConfig()
        lc = self.losses_cfg
        self.tokenizer = tokenizer or load_tokenizer(cfg.text_encoder.path)
        self.image_encoder = ImageEncoder(cfg.image_encoder, config=vision_config, load_pretrained=load_pretrained)
        self.text_encoder = TextEncoder(cfg.text_encoder, config=text_config, load_pretrained=load_pretrained)
        self.fusion = CoAttentionFusion(cfg.fusion, self.text_encoder.width, self.image_encoder.width)
        temp = dict(init=lc.temperature_init, min=lc.temperature_min, max=lc.temperature_max)
        self.temperature_itc = LearnableTemperature(**temp)
        self.temperature_imv = LearnableTemperature(**temp)
        self.temperature_utt = LearnableTemperature(**temp)
        hidden = cfg.fusion.hidden_size
        self.itm_head = nn.Linear(2 * hidden, 2)
        nn.init.normal_(self.itm_head.weight, std=0.02)
        nn.init.zeros_(self.itm_head.bias)
        self.pad_token_id = int(getattr(self.text_encoder.model.config, "pad_token_id", 0) or 0)
        # caption key -> the frozen text encoder's tokens of that caption (see cache_frozen_text)
        self._text_cache: dict[int, Tensor] | None = None
        # ITM under several processes pads captions to this length (the collate's maximum) instead of
        # agreeing on the longest by an all-reduce every step; set by the training loop
        self.fixed_caption_length: int | None = None
        self.stage = 0
        self.set_stage(stage)

    # ------------------------------------------------------------------ stages
    def uses(self, name: str, stage: int | None = None) -> bool:
        """Whether loss ``name`` runs in ``stage`` (default: the model's stage)."""
        stage = self.stage if stage is None else stage
        if name in ("wpa", "itm"):
            return stage >= 1 and bool(getattr(self.losses_cfg, name))
        return bool(getattr(self.losses_cfg, name))

    def set_stage(self, stage: int) -> None:
        """Set ``requires_grad`` for ``stage`` (see the class docstring) and the encoders' train/eval mode."""
        if stage < 0:
            raise ValueError(f"stage must be >= 0, got {stage}")
        self.stage = int(stage)
        on = {n: self.uses(n) for n in LOSS_NAMES}
        fused = on["wpa"] or on["itm"]
        trainable = {
            "image_encoder": self._trains("image", stage) and (on["itgc"] or on["imvc"] or fused),
            "text_encoder": self._trains("text", stage) and (on["itgc"] or on["utgc"] or fused),
            "fusion.image_proj": on["itgc"] or on["imvc"] or fused,
            "fusion.text_proj": on["itgc"] or on["utgc"] or fused,
            "fusion.type_embedding": fused,
            "fusion.text_layers": fused,
            "fusion.image_layers": fused,
            "itm_head": on["itm"],
            "temperature_itc": on["itgc"],
            "temperature_imv": on["imvc"],
            "temperature_utt": on["utgc"],
        }
        for name, flag in trainable.items():
            self.get_submodule(name).requires_grad_(flag)
        if self.cfg.text_encoder.freeze_word_embeddings:
            self.text_encoder.word_embeddings.weight.requires_grad_(False)
        self.train(self.training)

    def _trains(self, encoder: str, stage: int | None = None) -> bool:
        """Whether ``encoder`` ("image" / "text") is trained in ``stage`` (default: the model's)."""
        if self.train_encoders is None:
            return (self.stage if stage is None else stage) == 0
        return encoder in self.train_encoders

    def cache_frozen_text(self, enabled: bool = True) -> None:
        """Keep the frozen text encoder's output tokens of every caption in memory, so each caption is
        encoded once per run instead of once per step (same losses). Only for corpora whose token features
        fit in memory."""
        self._text_cache = {} if enabled else None

    def _text_tokens(self, ids: Tensor, mask: Tensor, keys: Tensor | None, grad: bool) -> Tensor:
        """Text encoder output ``[B, L, D]``; from the cache for frozen encoders (rows padded with zeros)."""
        if grad or self._text_cache is None or keys is None:
            with torch.set_grad_enabled(grad):
                return self.text_encoder(ids, mask)
        return self.text_encoder.encode_cached(ids, mask, keys.tolist(), self._text_cache)

    @property
    def encoders_frozen(self) -> bool:
        """True when neither encoder is trained (the paper's stage >= 1)."""
        return not (self._trains("image") or self._trains("text"))

    def train(self, mode: bool = True) -> AMiFPretrainModel:
        super().train(mode)
        for name in ("image", "text"):  # a frozen encoder runs in eval mode (no dropout)
            if not self._trains(name):
                getattr(self, f"{name}_encoder").eval()
        return self

    # ------------------------------------------------------------------ features
    def pool_image(self, tokens: Tensor) -> Tensor:
        """The token the global image feature is projected from: CLS (paper), the mean of all tokens, or
        the per-channel max over the patch tokens (each channel's gradient reaches the one patch where it
        peaks, which keeps small findings local to their patches)."""
        mode = self.losses_cfg.image_pooling
        if mode == "cls":
            return tokens[:, 0]
        return tokens[:, 1:].amax(dim=1) if mode == "max" else tokens.mean(dim=1)

    def pool_text(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """The token the global text feature is projected from: CLS (paper) or the mean of the real tokens."""
        if self.losses_cfg.text_pooling == "cls":
            return tokens[:, 0]
        m = mask.to(tokens.dtype).unsqueeze(-1)
        return (tokens * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)

    def image_features(self, pixel_values: Tensor) -> Tensor:
        """Global image features ``[B, H]``: L2-normalised projection of the pooled (CLS) image token."""
        tokens = self.image_encoder(pixel_values)
        return F.normalize(self.fusion.image_proj(self.pool_image(tokens)).float(), dim=-1)

    def text_features(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        """Global text features ``[B, H]``: L2-normalised projection of the pooled (CLS) text token."""
        tokens = self.text_encoder(input_ids, attention_mask)
        return F.normalize(self.fusion.text_proj(self.pool_text(tokens, attention_mask)).float(), dim=-1)

    # ------------------------------------------------------------------ training
    def forward(
        self,
        batch: Mapping[str, Any],
        teacher: TeacherEmbeddings | None = None,
        *,
        teacher_scale: float | Tensor | None = None,
        stage: int | None = None,
        generator: torch.Generator | None = None,
        return_aux: bool = False,
    ) -> dict[str, Tensor] | tuple[dict[str, Tensor], dict[str, Tensor]]:
        """The enabled losses of one step on the local batch (each a scalar; the total is their sum).

        Args:
            batch: ``image1``, ``image2`` ``[B, 3, H, W]``, ``input_ids``, ``attention_mask`` ``[B, L]``.
            teacher: the teacher's ``(u_view1, u_view2, v_text)`` ``[B, Dt]`` each, or None for hard labels
                (label smoothing ``losses.label_smoothing``).
            teacher_scale: the teacher's logit scale ``s`` (required with a teacher).
            stage: overrides the model's stage for the choice of losses (freezing follows :meth:`set_stage`).
            generator: random generator of the hard-negative draws (``hard_negative_mode: sample``).
            return_aux: also return ``pos_index``, ``neg_text``, ``neg_image`` (global rows), ``itm_logits``,
                ``itm_labels``, ``itm_keep`` (the ITM pairs in the loss; the counterfactual pairs follow the
                3B others) and ``itm_skipped`` (how many hard-negative pairs were left out for want of an
                admissible negative).
        """
        stage = self.stage if stage is None else stage
        lc = self.losses_cfg
        on = {n: self.uses(n, stage) for n in LOSS_NAMES}
        fused = on["wpa"] or on["itm"]
        if teacher is not None and teacher_scale is None:
            raise ValueError("teacher embeddings need teacher_scale")
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if on["itm"]:
            ids, mask = _pad_to_global_length(ids, mask, self.pad_token_id, self.fixed_caption_length)
        b = ids.shape[0]
        pixels = batch["image1"]
        if on["imvc"]:
            pixels = torch.cat([pixels, batch["image2"]], dim=0)
        grad = torch.is_grad_enabled()
        with torch.set_grad_enabled(grad and self._trains("image", stage)):
            image_tokens = self.image_encoder(pixels)
        text_tokens = self._text_tokens(ids, mask, batch.get("caption_key"), grad and self._trains("text", stage))
        a_both = F.normalize(self.fusion.image_proj(self.pool_image(image_tokens)), dim=-1)
        a1 = a_both[:b]
        t = F.normalize(self.fusion.text_proj(self.pool_text(text_tokens, mask)), dim=-1)
        pos = positive_index(b, device=t.device)

        soft: dict[str, Any] = dict(lam=lc.lam, mode=lc.target_mode, label_smoothing=lc.label_smoothing)
        u1 = u2 = v = u1_all = u2_all = v_all = None
        if teacher is not None:
            u1, u2, v = (x.to(t.device) for x in teacher)
            u1_all, v_all = gather_no_grad(u1), gather_no_grad(v)
            u2_all = gather_no_grad(u2) if on["imvc"] else None
            soft["teacher_scale"] = teacher_scale

        losses: dict[str, Tensor] = {}
        a1_all = gather_with_grad(a1) if (on["itgc"] or on["imvc"]) else None
        t_all = gather_with_grad(t) if (on["itgc"] or on["utgc"]) else None
        if on["itgc"]:
            losses["itgc"] = image_text_loss(
                a1, t, a1_all, t_all, pos, self.temperature_itc(), teacher_image=u1, teacher_text=v,
                teacher_image_all=u1_all, teacher_text_all=v_all, **soft,
            )
            if lc.itc_counterfactuals and "negative_ids" in batch:
                losses["itc_cf"] = lc.counterfactual_weight * self._counterfactual_contrast(
                    batch, a1, t, grad and self._trains("text", stage))
        if on["imvc"]:
            a2 = a_both[b:]
            losses["imvc"] = image_image_loss(
                a1, a2, a1_all, gather_with_grad(a2), pos, self.temperature_imv(), teacher_view1=u1,
                teacher_view2=u2, teacher_view1_all=u1_all, teacher_view2_all=u2_all, **soft,
            )
        if on["utgc"]:
            losses["utgc"] = text_text_loss(
                t, t_all, pos, self.temperature_utt(), teacher_text=v, teacher_text_all=v_all, **soft,
            )
        aux: dict[str, Tensor] = {"pos_index": pos}
        if fused:
            img1_tokens = image_tokens[:b]
            text_in = self.fusion.text_proj(text_tokens)
            image_in = self.fusion.image_proj(img1_tokens)
            if on["itm"]:
                neg_text, neg_image, ok_text, ok_image = self._hard_negatives(
                    a1.detach(), t.detach(), pos, generator, batch)
                # Raw encoder tokens of the negatives (frozen, no gradient) are gathered, then projected
                # here, so the projections get the same gradient as in one process.
                text_raw_all = gather_no_grad(text_tokens)
                mask_all = gather_no_grad(mask)
                image_raw_all = gather_no_grad(img1_tokens)
                neg_text_in = self.fusion.text_proj(text_raw_all.index_select(0, neg_text))
                neg_mask = mask_all.index_select(0, neg_text)
                neg_image_in = self.fusion.image_proj(image_raw_all.index_select(0, neg_image))
                texts = torch.cat([text_in, neg_text_in, text_in], dim=0)
                text_masks = torch.cat([mask, neg_mask.to(mask.dtype), mask], dim=0)
                images = torch.cat([image_in, image_in, neg_image_in], dim=0)
                x, y = self.fusion.fuse(texts, text_masks, images, None)
                logits = self.itm_head(torch.cat([x[:, 0], y[:, 0]], dim=-1))
                labels = torch.zeros(3 * b, dtype=torch.long, device=logits.device)
                labels[:b] = 1
                keep = torch.cat([torch.ones_like(ok_text), ok_text, ok_image])
                skipped = (~keep).sum()
                if lc.itm_counterfactuals and "negative_ids" in batch:
                    cf_logits, cf_keep = self._counterfactual_logits(batch, image_in, grad and self._trains("text", stage))
                    logits = torch.cat([logits, cf_logits], dim=0)
                    labels = torch.cat([labels, torch.zeros_like(cf_keep, dtype=labels.dtype)])
                    keep = torch.cat([keep, cf_keep])
                losses["itm"] = itm_loss(logits, labels, keep)
                aux.update(neg_text=neg_text, neg_image=neg_image, itm_logits=logits.detach(), itm_labels=labels,
                           itm_keep=keep, itm_skipped=skipped)
                x_pos, y_pos = x[:b], y[:b]
            else:
                x_pos, y_pos = self.fusion.fuse(text_in, mask, image_in, None)
            if on["wpa"]:
                dist_ot = wpa_loss(
                    x_pos, y_pos[:, 1:], wpa_text_mask(mask), None, method=lc.ot_method, beta=lc.ipot_beta,
                    iterations=lc.ipot_iters, epsilon=lc.sinkhorn_epsilon, sinkhorn_iterations=lc.sinkhorn_iters,
                )
                losses["wpa"] = dist_ot.mean() * lc.wpa_weight
        return (losses, aux) if return_aux else losses

    def _counterfactual_contrast(self, batch: Mapping[str, Any], image: Tensor, text: Tensor, grad: bool) -> Tensor:
        """:func:`counterfactual_contrast` of the local global image and caption features (``image``,
        ``text``) with the captions' counterfactual twins (``negative_ids``); local rows, no communication."""
        ids, mask = batch["negative_ids"].to(image.device), batch["negative_mask"].to(image.device)
        twin = F.normalize(self.fusion.text_proj(self.pool_text(
            self._text_tokens(ids, mask, batch.get("negative_key"), grad), mask)), dim=-1)
        valid = batch["negative_valid"].to(device=image.device, dtype=torch.bool)
        return counterfactual_contrast(image, text, twin, valid, self.temperature_itc())

    def _counterfactual_logits(self, batch: Mapping[str, Any], image_in: Tensor, grad: bool) -> tuple[Tensor, Tensor]:
        """ITM logits ``[B, 2]`` of each local image (projected tokens ``image_in``) with its counterfactual
        caption, and which rows are real pairs (``negative_valid``, bool ``[B]``). Local pairs only: no
        communication, so every process may hold a different number of them."""
        ids, mask = batch["negative_ids"].to(image_in.device), batch["negative_mask"].to(image_in.device)
        tokens = self._text_tokens(ids, mask, batch.get("negative_key"), grad)
        x, y = self.fusion.fuse(self.fusion.text_proj(tokens), mask, image_in, None)
        logits = self.itm_head(torch.cat([x[:, 0], y[:, 0]], dim=-1))
        return logits, batch["negative_valid"].to(device=logits.device, dtype=torch.bool)

    @torch.no_grad()
    def _hard_negatives(
        self, a: Tensor, t: Tensor, pos: Tensor, generator: torch.Generator | None,
        batch: Mapping[str, Any] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """One negative text per local image and one negative image per local text (global rows), and
        whether each could be drawn.

        A pair of the same study (``study_key``) or with the same caption (``caption_key``) is a positive
        in all but name, so neither is ever drawn: an image's negative caption is neither its own text nor
        a caption of its study, a caption's negative image neither its own image nor one of its study.
        A row left with no admissible column gets ``False`` (its ITM pair is then left out and counted).
        """
        lc = self.losses_cfg
        tau = lc.hard_negative_temperature
        if tau is None:
            tau = self.temperature_itc().detach()  # a tensor: no host synchronisation
        a_all, t_all = gather_no_grad(a), gather_no_grad(t)
        with torch.autocast(device_type=a.device.type, enabled=False):
            sim_i2t = a.float() @ t_all.float().T
            sim_t2i = t.float() @ a_all.float().T
        exclude = None
        for key in ("caption_key", "study_key"):
            if batch is not None and isinstance(batch.get(key), Tensor):
                local = batch[key].to(a.device)
                same = local[:, None] == gather_no_grad(local)[None, :]
                exclude = same if exclude is None else exclude | same
        kw = dict(temperature=tau, mode=lc.hard_negative_mode, generator=generator, exclude=exclude,
                  return_valid=True)
        neg_text, ok_text = sample_hard_negatives(sim_i2t, pos, **kw)
        neg_image, ok_image = sample_hard_negatives(sim_t2i, pos, **kw)
        return neg_text, neg_image, ok_text, ok_image

    @torch.no_grad()
    def clamp_temperatures(self) -> None:
        """Keep the learnable temperatures inside their range (call after each optimizer step)."""
        for name in TEMPERATURES:
            getattr(self, name).clamp_()

    def temperatures(self) -> dict[str, float]:
        with torch.no_grad():
            return {name: float(getattr(self, name)()) for name in TEMPERATURES}

    # ------------------------------------------------------------------ persistence
    def save(self, folder: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` (``image_encoder.*``, ``text_encoder.*``, ``fusion.*``, ``itm_head.*``,
        ``temperature_*``), ``pretrain_config.yaml`` (model, losses, stage), the encoder configs and the
        tokenizer. The folder is what ``run.init_from`` of the next stage or of fine-tuning takes."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS), metadata={"format": FORMAT, "stage": str(self.stage)})
        self.text_encoder.model.config.save_pretrained(str(folder / "text_encoder"))
        self.image_encoder.model.config.save_pretrained(str(folder / "image_encoder"))
        self.tokenizer.save_pretrained(str(folder / "tokenizer"))
        doc = {"format": FORMAT, "stage": self.stage, "model": to_dict(self.cfg), "losses": to_dict(self.losses_cfg)}
        if extra:
            doc["meta"] = dict(extra)
        (folder / CONFIG).write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
        return folder

    @classmethod
    def load(
        cls,
        folder: str | Path,
        cfg: ModelConfig | None = None,
        losses: LossConfig | None = None,
        *,
        stage: int | None = None,
        map_location: str | torch.device = "cpu",
        train_encoders: Sequence[str] | None = None,
    ) -> AMiFPretrainModel:
        """Rebuild a model saved by :meth:`save` (needs only the folder).

        ``cfg`` / ``losses`` replace the saved model and loss settings (e.g. the next stage's); the
        architecture must fit the saved tensors (a mismatch raises :class:`CheckpointError` naming them).
        ``stage`` defaults to the saved one; ``train_encoders`` as in the constructor.
        """
        folder = Path(folder)
        missing = [n for n in (WEIGHTS, CONFIG, "text_encoder", "image_encoder", "tokenizer")
                   if not (folder / n).exists()]
        if not folder.is_dir() or missing:
            raise CheckpointError(f"{folder} is not a pre-training model folder"
                                  + (f" (missing {', '.join(missing)})" if folder.is_dir() else " (not found)"))
        doc = yaml.safe_load((folder / CONFIG).read_text(encoding="utf-8")) or {}
        if doc.get("format") != FORMAT:
            raise CheckpointError(f"{folder / CONFIG} is not an amif pre-training config")
        cfg = cfg or from_dict(ModelConfig, doc["model"], "model")
        losses = losses or from_dict(LossConfig, doc.get("losses") or {}, "losses")
        model = cls(
            cfg, losses, stage=int(doc.get("stage", 0)) if stage is None else stage,
            tokenizer=AutoTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True),
            text_config=AutoConfig.from_pretrained(str(folder / "text_encoder"), local_files_only=True),
            vision_config=CLIPVisionConfig.from_pretrained(str(folder / "image_encoder"), local_files_only=True),
            load_pretrained=False, train_encoders=train_encoders,
        )
        model.load_weights(folder, map_location=map_location, strict=True)
        return model

    def load_weights(self, path: str | Path, *, map_location: str | torch.device = "cpu",
                     strict: bool = True) -> list[str]:
        """Load tensors from a folder's ``model.safetensors`` (or the file itself), checking every shape.

        ``strict=False`` allows tensors missing from the file (they keep their initialisation).
        Returns the loaded names.
        """
        path = Path(path)
        file = path / WEIGHTS if path.is_dir() else path
        if not file.is_file():
            raise CheckpointError(f"no {WEIGHTS} in {path}")
        state = load_safetensors(file, device=str(map_location))
        check_state_dict(self, state, strict=True, allow_missing=not strict,
                         context=f"weights in {file} (pre-training model)")
        self.load_state_dict(state, strict=False)
        self.clamp_temperatures()
        return sorted(state)

