"""The AMiF VQA model: encoders -> co-attention fusion -> gated cross-attention -> answer decoder.

Answers are produced by ranking a candidate list ("classification by generation"): the top-k
candidates by first-token probability are re-scored by their full-sequence log-likelihood. The
model is saved as a folder (safetensors weights + config + tokenizer) that loads with no access
to the training run or to the original pretrained-weight folders.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, PreTrainedTokenizerBase

from amif.config import ModelConfig, from_dict, to_dict
from amif.errors import CheckpointError
from amif.models.answer_decoder import AnswerDecoder
from amif.models.coattention import CoAttentionFusion
from amif.models.gated_cross_attention import GatedCrossAttention
from amif.models.image_encoder import ImageEncoder
from amif.models.pretrained import check_state_dict, load_bert_mlm_head
from amif.models.text_encoder import TextEncoder, load_tokenizer, resolve_text_path
from amif.safe_io import load_safetensors

FORMAT = "amif-vqa"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "amif_model.json"
ENCODER_PREFIXES = ("image_encoder.", "text_encoder.", "fusion.")


@dataclass
class RankedAnswers:
    """Ranked candidates per question: ``indices`` [B, k] into the candidate list, ``probs`` [B, k]."""

    indices: torch.Tensor
    probs: torch.Tensor
    log_likelihood: torch.Tensor


class AMiFVQA(nn.Module):
    """AMiF for Med-VQA. ``answer_candidates`` are what inference ranks; ``vocabulary`` feeds the GCA."""

    def __init__(
        self,
        cfg: ModelConfig,
        answer_candidates: Sequence[str],
        vocabulary: Sequence[str],
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        text_config=None,
        vision_config: CLIPVisionConfig | None = None,
        load_pretrained: bool = True,
    ):
        super().__init__()
        self.cfg = cfg
        self.tokenizer = tokenizer or load_tokenizer(cfg.text_encoder.path)
        self.image_encoder = ImageEncoder(cfg.image_encoder, config=vision_config, load_pretrained=load_pretrained)
        self.text_encoder = TextEncoder(cfg.text_encoder, config=text_config, load_pretrained=load_pretrained)
        tconf = self.text_encoder.model.config
        hidden = cfg.fusion.hidden_size
        self.fusion = CoAttentionFusion(cfg.fusion, self.text_encoder.width, self.image_encoder.width)
        self.gca = (
            GatedCrossAttention(hidden, cfg.gca.num_heads, cfg.gca.intermediate_size, cfg.gca.dropout,
                                attention_init=cfg.gca.attention_init)
            if cfg.gca.enabled else None
        )
        self.prior_proj = nn.Linear(tconf.hidden_size, hidden) if cfg.gca.enabled and tconf.hidden_size != hidden else None
        self.decoder = AnswerDecoder(
            vocab_size=tconf.vocab_size,
            hidden_size=tconf.hidden_size,
            num_heads=tconf.num_attention_heads,
            intermediate_size=tconf.intermediate_size,
            num_layers=cfg.decoder.num_layers or tconf.num_hidden_layers,
            cross_attention_from=cfg.decoder.cross_attention_from,
            context_size=hidden,
            max_positions=getattr(tconf, "max_position_embeddings", 512),
            dropout=cfg.decoder.dropout,
            layer_norm_eps=getattr(tconf, "layer_norm_eps", 1e-12),
            cross_attention_init=cfg.decoder.cross_attention_init,
        )
        if cfg.decoder.init_from_text_encoder and load_pretrained and cfg.text_encoder.pretrained:
            self.decoder.load_bert_weights(self.text_encoder.model.state_dict())
            head = load_bert_mlm_head(resolve_text_path(cfg.text_encoder.path))  # {} without an MLM head
            _load_checked(self.decoder, head, f"the MLM head of {cfg.text_encoder.path}", strict=False)
        if cfg.text_encoder.freeze_word_embeddings:
            self.text_encoder.word_embeddings.weight.requires_grad_(False)
            self.decoder.word_embeddings.weight.requires_grad_(False)
        self.set_answer_candidates(answer_candidates)
        self.set_vocabulary(vocabulary)
        self.meta: dict = {}  # free-form facts saved with the model (protocol, dataset, ...)
        self.frozen_encoders: set[str] = set()
        self._feature_cache: dict[str, dict] | None = None
        self.train()  # transformers' from_pretrained leaves sub-models in eval mode

    def freeze_image_encoder(self) -> None:
        """Keep the image encoder as it is: no gradient, and eval mode whatever ``train()`` is called
        with, so its BatchNorm statistics stay fixed too (``run.freeze_image_encoder``)."""
        self._freeze("image_encoder")

    def freeze_text_encoder(self) -> None:
        """Keep the question encoder (and the word embeddings the GCA reads its prior from) as it is:
        no gradient, eval mode (``run.freeze_text_encoder``)."""
        self._freeze("text_encoder")

    def _freeze(self, name: str) -> None:
        module = getattr(self, name)
        module.requires_grad_(False)
        module.eval()
        self.frozen_encoders.add(name)

    def cache_frozen_features(self, enabled: bool = True) -> None:
        """Keep the output of each frozen encoder per distinct image (keyed by a hash of its pixels) and
        question (keyed by its token ids) in memory, so it is computed once per run instead of once per
        step (``run.cache_frozen_features``). Encoders that train are never cached. For datasets whose
        features fit in memory and images that are not augmented."""
        self._feature_cache = {"image_encoder": {}, "text_encoder": {}} if enabled else None

    def _cache(self, name: str) -> dict | None:
        if self._feature_cache is None or name not in self.frozen_encoders:
            return None
        return self._feature_cache[name]

    def encode_image(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Image encoder tokens ``[B, 1 + P, D]`` (from the cache for a frozen, cached encoder)."""
        cache = self._cache("image_encoder")
        if cache is None:
            return self.image_encoder(pixel_values)
        host = pixel_values.detach().float().cpu().contiguous()
        keys = [hashlib.blake2b(row.numpy().tobytes(), digest_size=16).digest() for row in host]
        new = list({k: i for i, k in enumerate(keys) if k not in cache}.values())
        if new:
            with torch.no_grad():
                out = self.image_encoder(pixel_values[new])
            cache.update({keys[i]: out[j] for j, i in enumerate(new)})
        return torch.stack([cache[k] for k in keys])

    def encode_questions(self, question_ids: torch.Tensor, question_mask: torch.Tensor) -> torch.Tensor:
        """Question encoder tokens ``[B, L, D]`` (from the cache for a frozen, cached encoder; there the
        padded positions are zeros, which the fusion masks out like any padding)."""
        cache = self._cache("text_encoder")
        if cache is None:
            return self.text_encoder(question_ids, question_mask)
        keys = [tuple(row[:n].tolist()) for row, n in zip(question_ids, question_mask.sum(1).tolist())]
        return self.text_encoder.encode_cached(question_ids, question_mask, keys, cache)

    def train(self, mode: bool = True) -> AMiFVQA:
        """As ``nn.Module.train``; a frozen encoder stays in eval mode."""
        super().train(mode)
        for name in getattr(self, "frozen_encoders", ()):
            getattr(self, name).eval()
        return self

    # ------------------------------------------------------------------ vocabularies
    def set_answer_candidates(self, candidates: Sequence[str]) -> None:
        """Set the answers inference ranks (tokenised once as ``[CLS] answer [SEP]``)."""
        if not candidates:
            raise ValueError("the answer candidate list is empty")
        self.answer_candidates = list(candidates)
        ids, mask = self.tokenize_answers(self.answer_candidates)
        self.register_buffer("candidate_ids", ids, persistent=False)
        self.register_buffer("candidate_mask", mask, persistent=False)
        self._restrict_output()

    def _restrict_output(self) -> None:
        """``decoder.output_vocabulary: answers``: the decoder scores the tokens of the candidates and
        of the vocabulary words (training answers are among them under both protocols) only."""
        if self.cfg.decoder.output_vocabulary != "answers" or not hasattr(self, "prior_ids"):
            return
        cand = self.candidate_ids[:, 1:][self.candidate_mask[:, 1:].bool()]
        self.decoder.restrict_output(torch.cat([cand, self.prior_ids[self.prior_mask]]))

    def set_vocabulary(self, vocabulary: Sequence[str]) -> None:
        """Set the answer-vocabulary prior read by the GCA: one sequence ``[CLS] w1 w2 ... [SEP]``."""
        self.vocabulary = list(vocabulary)
        enc = self.tokenizer([" ".join(self.vocabulary)], return_tensors="pt", truncation=False)
        self.register_buffer("prior_ids", enc["input_ids"], persistent=False)
        self.register_buffer("prior_mask", enc["attention_mask"].bool(), persistent=False)
        self._restrict_output()

    def tokenize_questions(self, questions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            list(questions), padding="longest", truncation=True,
            max_length=self.cfg.text_encoder.max_length, return_tensors="pt",
        )
        return enc["input_ids"], enc["attention_mask"]

    def tokenize_answers(self, answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            list(answers), padding="longest", truncation=True,
            max_length=self.cfg.decoder.max_answer_length, return_tensors="pt",
        )
        return enc["input_ids"], enc["attention_mask"]

    # ------------------------------------------------------------------ forward passes
    def fuse(
        self, pixel_values: torch.Tensor, question_ids: torch.Tensor, question_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused image+question features [B, Lq + Li, D] and their mask (after the GCA when enabled).

        ``pixel_values`` is [B, 3, H, W], or [1, 3, H, W]: one image shared by all B questions (encoded
        once; same result as B copies).
        """
        image = self.encode_image(pixel_values)
        text = self.encode_questions(question_ids, question_mask)
        if image.shape[0] == 1 and text.shape[0] > 1:
            image = image.expand(text.shape[0], -1, -1)
        x, y = self.fusion(text, question_mask, image)
        fused = torch.cat([x, y], dim=1)
        mask = torch.cat([question_mask.bool(), torch.ones(y.shape[:2], dtype=torch.bool, device=y.device)], 1)
        if self.gca is not None:
            prior = self.text_encoder.word_embeddings(self.prior_ids)
            if self.prior_proj is not None:
                prior = self.prior_proj(prior)
            fused = self.gca(fused, prior, self.prior_mask)
        return fused, mask

    def forward(
        self,
        pixel_values: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Training loss: answer-token cross-entropy summed per sample, averaged over the batch."""
        context, cmask = self.fuse(pixel_values, question_ids, question_mask)
        return -self.decoder.sequence_log_likelihood(answer_ids, answer_mask, context, cmask).mean()

    @torch.no_grad()
    def rank(
        self,
        pixel_values: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor,
        k: int | None = None,
    ) -> RankedAnswers:
        """Rank the candidates: top-k by first-token probability, re-scored by full-sequence likelihood.

        Returns the k candidates per question sorted best first, with probabilities (softmax over the
        k full-sequence log-likelihoods). The published code counts the first token twice; here the
        score is exactly the sequence log-likelihood.
        """
        k = min(k or self.cfg.decoder.rank_k, len(self.answer_candidates))
        context, cmask = self.fuse(pixel_values, question_ids, question_mask)
        b = context.shape[0]
        start = self.candidate_ids[:1, :1].expand(b, 1)
        first = self.decoder(start, torch.ones_like(start, dtype=torch.bool), context, cmask)[:, 0]
        first_logp = first.log_softmax(-1)[:, self.decoder.output_positions(self.candidate_ids[:, 1])]  # [B, C]
        top = first_logp.topk(k, dim=1).indices  # [B, k]
        ids, mask = self.candidate_ids[top].flatten(0, 1), self.candidate_mask[top].flatten(0, 1)
        ll = self.decoder.sequence_log_likelihood(
            ids, mask, context.repeat_interleave(k, 0), cmask.repeat_interleave(k, 0)
        ).view(b, k)
        order = ll.argsort(dim=1, descending=True)
        ll = ll.gather(1, order)
        return RankedAnswers(indices=top.gather(1, order), probs=ll.softmax(-1), log_likelihood=ll)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | Path) -> Path:
        """Write weights (safetensors), config, vocabularies and tokenizer to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS), metadata={"format": FORMAT})
        self.text_encoder.model.config.save_pretrained(str(folder / "text_encoder"))
        self.image_encoder.model.config.save_pretrained(str(folder / "image_encoder"))
        self.tokenizer.save_pretrained(str(folder / "tokenizer"))
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": to_dict(self.cfg),
            "answer_candidates": self.answer_candidates,
            "vocabulary": self.vocabulary,
            "meta": self.meta,
        }
        (folder / META).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        return folder

    @classmethod
    def from_pretrained(cls, folder: str | Path, map_location: str | torch.device = "cpu") -> AMiFVQA:
        """Load a model saved with :meth:`save_pretrained` (needs nothing but the folder)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"model folder not found: {folder}")
        missing = [n for n in (META, WEIGHTS, "text_encoder", "image_encoder", "tokenizer") if not (folder / n).exists()]
        if missing:
            raise CheckpointError(f"model folder {folder} is incomplete: missing {', '.join(missing)}")
        try:
            meta = json.loads((folder / META).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
            raise CheckpointError(f"{folder / META}: not valid JSON ({e})") from e
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{folder / META} is not an amif VQA model (format {meta.get('format')!r})")
        cfg = from_dict(ModelConfig, meta["model"], "model")
        model = cls(
            cfg,
            meta["answer_candidates"],
            meta["vocabulary"],
            tokenizer=AutoTokenizer.from_pretrained(str(folder / "tokenizer"), local_files_only=True),
            text_config=AutoConfig.from_pretrained(str(folder / "text_encoder"), local_files_only=True),
            vision_config=CLIPVisionConfig.from_pretrained(str(folder / "image_encoder"), local_files_only=True),
            load_pretrained=False,
        )
        state = load_safetensors(folder / WEIGHTS, device=str(map_location))
        _load_checked(model, state, str(folder / WEIGHTS), strict=True)
        model.meta = dict(meta.get("meta") or {})
        return model

    def load_encoder_weights(self, path: str | Path) -> list[str]:
        """Initialise encoders and fusion from a pre-training checkpoint (folder or safetensors file).

        Only keys under ``image_encoder.``, ``text_encoder.`` and ``fusion.`` are taken; the GCA and
        the decoder keep their initialisation. Returns the loaded key names.
        """
        path = Path(path)
        file = path / WEIGHTS if path.is_dir() else path
        if not file.is_file():
            raise CheckpointError(f"no {WEIGHTS} in {path}")
        state = {k: v for k, v in load_safetensors(file).items() if k.startswith(ENCODER_PREFIXES)}
        if not state:
            raise CheckpointError(f"{file} holds no image_encoder./text_encoder./fusion. weights")
        _load_checked(self, state, str(file), strict=False)
        return sorted(state)


def _load_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool) -> None:
    """load_state_dict with a clear error naming every tensor that does not fit (``strict=False``: the
    file may hold a subset of the model's tensors, but nothing the model does not have)."""
    check_state_dict(model, state, strict=True, allow_missing=not strict, context=f"weights in {source}")
    model.load_state_dict(state, strict=strict)
