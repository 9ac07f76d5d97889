"""Lightning module for VQA fine-tuning: answer-token loss, rank-based validation with count metrics."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from amif.metrics import VQAAccuracy
from amif.models.coattention import enable_activation_checkpointing
from amif.models.vqa import AMiFVQA
from amif_train.config import FinetuneRunConfig
from amif_train.optim import adamw, param_groups, warmup_cosine


def pretrained_prefixes(model: AMiFVQA, run: FinetuneRunConfig) -> tuple[str, ...]:
    """Modules that start from pretrained weights (they get ``run.lr``; the others ``run.lr_new_modules``).

    The text encoder and the decoder copy pretrained text weights; the image encoder only when it was
    loaded from a checkpoint or the run starts from a pre-training folder; the co-attention layers
    only in the latter case.
    """
    prefixes = ["text_encoder.", "decoder."]
    if model.cfg.image_encoder.pretrained or run.init_from:
        prefixes.append("image_encoder.")
    if run.init_from:
        prefixes.append("fusion.")
    return tuple(prefixes)


class VQAModule(L.LightningModule):
    def __init__(self, model: AMiFVQA, run: FinetuneRunConfig, question_types: Sequence[str] = ()):
        super().__init__()
        self.model = model
        self.run = run
        self.val_metric = VQAAccuracy(question_types=list(question_types))
        if run.freeze_image_encoder:
            model.freeze_image_encoder()
        if run.freeze_text_encoder:
            model.freeze_text_encoder()
        if run.cache_frozen_features:
            model.cache_frozen_features()
        if run.activation_checkpointing:
            enable_activation_checkpointing(model)

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # the answers' tokens are checked against a restricted output vocabulary here, on the host,
        # so that the loss itself never waits for the device
        if isinstance(batch, dict) and "answer_ids" in batch:
            self.model.decoder.check_targets(batch["answer_ids"], batch["answer_mask"])
        return batch

    @staticmethod
    def _tokens(batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The token ids the collate (``AMiFVQA.collate``, in the DataLoader workers) put in the batch."""
        if "question_ids" not in batch:
            raise ValueError("VQAModule needs batches with token ids: give the DataLoader collate_fn=model.collate()")
        return {k: batch[k] for k in ("question_ids", "question_mask", "answer_ids", "answer_mask")}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.model(batch["pixel_values"], **self._tokens(batch))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["question"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        toks = self._tokens(batch)
        # one fused pass serves the loss and the ranking (eval mode: the same features either way)
        context, cmask = self.model.fuse(batch["pixel_values"], toks["question_ids"], toks["question_mask"],
                                         batch.get("image_index"))
        loss = -self.model.decoder.sequence_log_likelihood(toks["answer_ids"], toks["answer_mask"], context,
                                                           cmask).mean()
        ranked = self.model.rank_fused(context, cmask)
        preds = [self.model.answer_candidates[i] for i in ranked.indices[:, 0].tolist()]
        self.val_metric.update(preds, batch["answer"], batch["answer_type"], batch["question_type"])
        self.log("val/loss", loss, sync_dist=True, batch_size=len(preds))

    def on_validation_epoch_end(self) -> None:
        results = self.val_metric.compute()
        for key in ("overall", "open", "closed", "open_yesno", "closed_yesno"):
            if key in results and not torch.isnan(results[key]):
                self.log(f"val/{key}", results[key], prog_bar=key == "overall")
        self.log("val/n_questions", results["n_overall"].float())  # every question counted once, also under DDP
        self.val_metric.reset()

    def configure_optimizers(self):
        groups = param_groups(
            self.model, self.run.lr, self.run.weight_decay, self.run.lr_new_modules,
            pretrained_prefixes=pretrained_prefixes(self.model, self.run),
        )
        opt = adamw(groups, self.run.lr, self.run.betas)
        sched = warmup_cosine(opt, self.trainer.estimated_stepping_batches, self.run.warmup_fraction, self.run.min_lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
