"""Lightning module of AMiF pre-training: the loss dict per step, retrieval recall@K on validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch

from amif.models.coattention import enable_activation_checkpointing
from amif.models.pretrain import TEMPERATURES, AMiFPretrainModel
from amif.retrieval import caption_positive_mask, recall_at_k
from amif.teachers import Teacher
from amif_train.config import PretrainRunConfig
from amif_train.optim import adamw, param_groups, warmup_cosine


class PretrainModule(L.LightningModule):
    """Trains an :class:`AMiFPretrainModel`; the frozen ``teacher`` (or None: hard labels) gives soft labels.

    Training logs ``train/<loss>`` for every enabled loss, ``train/loss`` (their sum) and the three
    temperatures. Validation embeds the held-out corpus (view 1 without augmentation, captions), gathers
    it over processes (duplicates from the distributed sampler removed by item index) and logs
    ``val/i2t_rK``, ``val/t2i_rK`` and ``val/recall_mean`` (the checkpoint selection metric). Items with
    identical captions count as positives of each other.
    """

    def __init__(
        self,
        model: AMiFPretrainModel,
        run: PretrainRunConfig,
        teacher: Teacher | None = None,
        ks: Sequence[int] = (1, 5, 10),
    ) -> None:
        super().__init__()
        self.model = model
        self.run = run
        self.teacher = teacher
        self.ks = tuple(ks)
        self._val: list[tuple[torch.Tensor, ...]] = []
        self.last_val_metrics: dict[str, float] = {}
        if run.activation_checkpointing:
            enable_activation_checkpointing(model)

    # ------------------------------------------------------------------ training
    def _teacher(self, batch: dict[str, Any]):
        if self.teacher is None:
            return None, None
        if self.teacher.device != self.device:
            self.teacher.to(self.device)
        return self.teacher.teacher_embeddings(batch), self.teacher.logit_scale

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        teacher_out, scale = self._teacher(batch)
        losses, aux = self.model(batch, teacher_out, teacher_scale=scale, return_aux=True)
        total = torch.stack([v.float() for v in losses.values()]).sum()
        bsz = int(batch["input_ids"].shape[0])
        if "itm_skipped" in aux:  # ITM pairs without an admissible negative, summed over the epoch
            self.log("train/itm_skipped", aux["itm_skipped"].float(), on_step=False, on_epoch=True,
                     reduce_fx="sum", batch_size=bsz)
        self.log_dict({f"train/{k}": v.detach().float() for k, v in losses.items()}, batch_size=bsz)
        self.log("train/loss", total.detach(), prog_bar=True, batch_size=bsz)
        if self.trainer._logger_connector.should_update_logs:  # tensors, on logging steps only
            with torch.no_grad():
                taus = {f"train/tau_{n.split('_')[-1]}": getattr(self.model, n)().detach() for n in TEMPERATURES}
            self.log_dict(taus, batch_size=bsz)
        return total

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.model.clamp_temperatures()

    # ------------------------------------------------------------------ validation
    def on_validation_epoch_start(self) -> None:
        self._val = []

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        img = self.model.image_features(batch["image1"])
        txt = self.model.text_features(batch["input_ids"], batch["attention_mask"])
        self._val.append((img.float(), txt.float(), batch["caption_key"], batch["index"]))

    def _gathered(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        img, txt, keys, index = (torch.cat([v[i] for v in self._val]) for i in range(4))
        if self.trainer.world_size > 1:
            img, txt, keys, index = (self.all_gather(t).flatten(0, 1) for t in (img, txt, keys, index))
        order = torch.argsort(index, stable=True)
        index = index[order]
        keep = torch.ones_like(index, dtype=torch.bool)
        keep[1:] = index[1:] != index[:-1]  # the distributed sampler repeats items to even out ranks
        sel = order[keep]
        return img[sel], txt[sel], keys[sel]

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        img, txt, keys = self._gathered()
        self._val = []
        metrics = recall_at_k(img, txt, self.ks, caption_positive_mask(keys))
        metrics["n_pairs"] = float(img.shape[0])
        self.last_val_metrics = metrics
        for k, v in metrics.items():
            self.log(f"val/{k}", v, prog_bar=k in ("recall_mean", "i2t_r1"), sync_dist=False)

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self):
        groups = param_groups(
            self.model, self.run.lr, self.run.weight_decay, self.run.lr_new_modules,
            pretrained_prefixes=("image_encoder.", "text_encoder."),
        )
        if not groups:
            raise RuntimeError("no trainable parameters in this stage")
        opt = adamw(groups, self.run.lr, self.run.betas)
        sched = warmup_cosine(opt, self.trainer.estimated_stepping_batches, self.run.warmup_fraction, self.run.min_lr)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
