"""The AMiF VQA model: encoders -> co-attention fusion -> gated cross-attention -> answer decoder.

Answers are produced by ranking a candidate list ("classification by generation"): the top-k
candidates by first-token probability are re-scored by their full-sequence log-likelihood. The
model is saved as a folder (safetensors weights + config + tokenizer) that loads with no access
to the training run or to the original pretrained-weight folders.
"""

from __future__ import annotations

import hashlib
import json
import weakref
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn
from transformers import AutoConfig, AutoTokenizer, CLIPVisionConfig, PreTrainedTokenizerBase

from amif.configuration import from_dict, to_dict
from amif.data.collate import VQACollate, tokenize
from amif.errors import CheckpointError
from amif.models.answer_decoder import AnswerDecoder
from amif.models.coattention import CoAttentionFusion
from amif.models.config import ModelConfig
from amif.models.gated_cross_attention import GatedCrossAttention
from amif.models.image_encoder import ImageEncoder
from amif.models.ranking import RankedAnswers, rank_candidates
from amif.models.text_encoder import TextEncoder, load_tokenizer, resolve_text_path
from amif.safe_io import load_safetensors
from amif.weights.bert import load_bert_mlm_head
from amif.weights.checks import check_state_dict

FORMAT = "amif-vqa"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
META = "amif_model.json"
ENCODER_PREFIXES = ("image_encoder.", "text_encoder.", "fusion.")


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
        self._prior_cache: tuple[list, torch.Tensor] | None = None
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
        """As ``nn.Module.train``; a frozen encoder stays in eval mode. Drops the cached GCA prior."""
        super().train(mode)
        self._prior_cache = None
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
        """Token ids and mask of (normalised) questions, as :meth:`collate` gives them."""
        return tokenize(self.tokenizer, questions, self.cfg.text_encoder.max_length)

    def tokenize_answers(self, answers: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and mask of (normalised) answers, as :meth:`collate` gives them."""
        return tokenize(self.tokenizer, answers, self.cfg.decoder.max_answer_length)

    def collate(self) -> VQACollate:
        """The DataLoader collate that tokenises questions and answers for this model (in the workers)."""
        return VQACollate(self.tokenizer, self.cfg.text_encoder.max_length, self.cfg.decoder.max_answer_length)

    # ------------------------------------------------------------------ forward passes
    def fuse(
        self,
        pixel_values: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor,
        image_index: torch.Tensor | None = None,
        *,
        cache_prior: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused image+question features [B, Lq + Li, D] and their mask (after the GCA when enabled).

        ``pixel_values`` is [B, 3, H, W], or [1, 3, H, W]: one image shared by all B questions (encoded
        once; same result as B copies). ``image_index`` [B] (best a host tensor, e.g. from
        ``collate_vqa``) names each question's row of ``pixel_values``; outside training each row it
        names is encoded once, however many questions share it. ``cache_prior=False`` recomputes the
        GCA's vocabulary branch even where :meth:`encoded_prior` would reuse it.
        """
        image = self._encode_indexed(pixel_values, image_index)
        text = self.encode_questions(question_ids, question_mask)
        if image.shape[0] == 1 and text.shape[0] > 1:
            image = image.expand(text.shape[0], -1, -1)
        x, y = self.fusion(text, question_mask, image)
        fused = torch.cat([x, y], dim=1)
        mask = torch.cat([question_mask.bool(), torch.ones(y.shape[:2], dtype=torch.bool, device=y.device)], 1)
        if self.gca is not None:
            prior = self.encoded_prior(cache=cache_prior)
            fused = self.gca.read(fused, prior, self.prior_mask)
        return fused, mask

    def _encode_indexed(self, pixel_values: torch.Tensor, image_index: torch.Tensor | None) -> torch.Tensor:
        if image_index is None:
            return self.encode_image(pixel_values)
        if self.image_encoder.training:  # batch statistics (conv stem) see one image per question
            return self.encode_image(pixel_values[image_index.to(pixel_values.device)])
        rows, inverse = torch.unique(image_index, return_inverse=True)
        image = self.encode_image(pixel_values[rows.to(pixel_values.device)])
        return image[inverse.to(image.device)]

    def encoded_prior(self, cache: bool = True) -> torch.Tensor:
        """The GCA's vocabulary branch [1, Lp, D]: the prior's word embeddings (projected to the fusion
        width) after the GCA's self-attention and feed-forward block. It depends only on weights and
        vocabulary, so outside training and gradient recording it is computed once and reused until a
        weight it reads (its values, device or dtype), the vocabulary, the mode or autocast changes."""
        if self.gca is None:
            raise ValueError("the GCA is switched off (model.gca.enabled=false): there is no prior branch")
        key = self._prior_key() if cache and not self.gca.training and not torch.is_grad_enabled() else None
        if key is not None and self._prior_cache is not None and _same_key(self._prior_cache[0], key):
            return self._prior_cache[1]
        prior = self.text_encoder.word_embeddings(self.prior_ids)
        if self.prior_proj is not None:
            prior = self.prior_proj(prior)
        encoded = self.gca.encode_prior(prior, self.prior_mask)
        self._prior_cache = None if key is None else (key, encoded)
        return encoded

    def _prior_key(self) -> list:
        gca = self.gca
        tensors = [self.text_encoder.word_embeddings.weight, self.prior_ids, self.prior_mask]
        for module in (gca.prior_attn, gca.prior_attn_norm, gca.prior_ffn, gca.prior_ffn_norm, self.prior_proj):
            tensors += [] if module is None else list(module.parameters())
        device = self.prior_ids.device.type
        autocast = (torch.is_autocast_enabled(device), torch.get_autocast_dtype(device))
        return [autocast] + [(weakref.ref(t), t.data_ptr(), t._version, t.dtype, t.device) for t in tensors]

    def forward(
        self,
        pixel_values: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor,
        answer_ids: torch.Tensor,
        answer_mask: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Training loss: answer-token cross-entropy summed per sample, averaged over the batch."""
        context, cmask = self.fuse(pixel_values, question_ids, question_mask, image_index)
        return -self.decoder.sequence_log_likelihood(answer_ids, answer_mask, context, cmask).mean()

    @torch.no_grad()
    def rank(
        self,
        pixel_values: torch.Tensor,
        question_ids: torch.Tensor,
        question_mask: torch.Tensor,
        k: int | None = None,
        image_index: torch.Tensor | None = None,
        *,
        reference: bool = False,
    ) -> RankedAnswers:
        """Rank the candidates: top-k by first-token probability, re-scored by full-sequence likelihood.

        Returns the k candidates per question sorted best first, with probabilities (softmax over the
        k full-sequence log-likelihoods). The published code counts the first token twice; here the
        score is exactly the sequence log-likelihood. ``reference=True`` computes the same ranking the
        published code's way (each question's image encoded for it, the GCA prior recomputed, the
        context repeated k times; ``amif.models.ranking``), to check and time the fast path against.
        """
        if reference:
            if image_index is not None:
                pixel_values, image_index = pixel_values[image_index.to(pixel_values.device)], None
            context, cmask = self.fuse(pixel_values, question_ids, question_mask, cache_prior=False)
        else:
            context, cmask = self.fuse(pixel_values, question_ids, question_mask, image_index)
        return self.rank_fused(context, cmask, k, reference=reference)

    def rank_fused(
        self, context: torch.Tensor, context_mask: torch.Tensor, k: int | None = None, *, reference: bool = False
    ) -> RankedAnswers:
        """:meth:`rank` from fused features (:meth:`fuse`), e.g. shared with a validation loss."""
        k = min(k or self.cfg.decoder.rank_k, len(self.answer_candidates))
        return rank_candidates(self.decoder, self.candidate_ids, self.candidate_mask, context, context_mask, k,
                               reference=reference)

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


def _same_key(a: list, b: list) -> bool:
    """Whether two :meth:`AMiFVQA._prior_key` results name the same tensors in the same state."""
    if len(a) != len(b) or a[0] != b[0]:
        return False
    return all(x[0]() is not None and x[0]() is y[0]() and x[1:] == y[1:] for x, y in zip(a[1:], b[1:]))


def _load_checked(model: nn.Module, state: dict[str, torch.Tensor], source: str, strict: bool) -> None:
    """load_state_dict with a clear error naming every tensor that does not fit (``strict=False``: the
    file may hold a subset of the model's tensors, but nothing the model does not have)."""
    check_state_dict(model, state, strict=True, allow_missing=not strict, context=f"weights in {source}")
    model.load_state_dict(state, strict=strict)
