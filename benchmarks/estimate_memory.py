"""Estimate the GPU memory of the paper configs' training steps without a GPU.

    python benchmarks/estimate_memory.py [--batch 2]

Runs the forward pass of a paper-size stage-0 step, stage-1 step and fine-tuning step on the CPU under
bf16 autocast (random weights in the released formats, ``amif.testing.paper_size``) and measures the bytes the
autograd graph saves for the backward pass (unique storages, via ``saved_tensors_hooks``), per sample.
With ``run.activation_checkpointing`` the saved bytes are those of the layers not recomputed, plus the
checkpointed layers' hidden-state inputs, plus the most one layer call saves (the recompute in the
backward pass), all measured. The estimate for a config's per-device batch is then

    saved bytes per sample x batch + 16 bytes per trainable parameter (fp32 weight, gradient, two AdamW
    moments) + 4 bytes per frozen parameter (teacher included)

plus a stated allowance for the CUDA context, kernels' workspace and allocator fragmentation. It is an
estimate: CUDA kernels save slightly different tensors than CPU ones, and peaks inside the backward pass
are not modelled. ``benchmarks/gpu_check.py`` measures the real peak on a GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

from amif.testing.paper_size import (
    candidate_answers,
    paper_overrides,
    pretrain_batch,
    vqa_batch,
    write_paper_files,
)
from amif_train.config import PretrainConfig, load_config

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper"

ALLOWANCE_GIB = 4.0  # CUDA context, cuBLAS / attention workspaces, fragmentation (assumed, not measured)


def checkpointed_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers ``enable_activation_checkpointing`` recomputes: encoder layers, fusion layers."""
    return [*model.image_encoder.tower.encoder.layers, *model.text_encoder.model.encoder.layer,
            *model.fusion.text_layers, *model.fusion.image_layers]


def saved_bytes(fn, layers: list[torch.nn.Module] = ()) -> tuple[int, int, int]:
    """``(total, largest call of one layer, inputs of the layers)``: bytes of the distinct storages
    autograd saves while ``fn()`` runs, the most one call of one of ``layers`` saves (what recomputing
    it in the backward pass needs at once), and the bytes of those layers' hidden-state inputs (what
    checkpointing keeps instead)."""
    seen: dict[int, int] = {}
    stack: list[dict[int, int]] = []
    calls: list[int] = []
    inputs = [0]

    def pack(t: torch.Tensor):
        st = t.untyped_storage()
        seen[st.data_ptr()] = st.nbytes()
        if stack:
            stack[-1][st.data_ptr()] = st.nbytes()
        return t

    def pre(module, args, kwargs):
        stack.append({})
        hidden = args[0] if args and isinstance(args[0], torch.Tensor) else kwargs.get("hidden_states")
        inputs[0] += hidden.nbytes if hidden is not None else 0  # the fusion's two streams: one per layer

    def post(module, args, kwargs, out):
        calls.append(sum(stack.pop().values()))

    handles = [m.register_forward_pre_hook(pre, with_kwargs=True) for m in layers]
    handles += [m.register_forward_hook(post, with_kwargs=True) for m in layers]
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
    finally:
        for h in handles:
            h.remove()
    return sum(seen.values()), max(calls, default=0), inputs[0]


def param_bytes(model: torch.nn.Module) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return trainable, frozen


def main(argv: list[str] | None = None) -> int:
    import transformers

    transformers.utils.logging.set_verbosity_error()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args(argv)
    from amif.models.coattention import enable_activation_checkpointing
    from amif.models.pretrain import AMiFPretrainModel
    from amif.models.vqa import AMiFVQA
    from amif.teachers import load_teacher

    gib = 2**30
    b = args.batch
    rows = []
    with tempfile.TemporaryDirectory(prefix="amif-mem-") as tmp:
        files = write_paper_files(Path(tmp))
        cfg = load_config(PAPER / "pretrain_stage0.yaml", paper_overrides(files, pretraining=True),
                          cls=PretrainConfig)
        teacher = load_teacher(cfg.losses.teacher, "cpu")
        teacher_params = sum(p.numel() for p in teacher.model.parameters())
        model = AMiFPretrainModel(cfg.model, cfg.losses, stage=0)
        batch = pretrain_batch(model, teacher, b, caption_words=118)
        targets = teacher.teacher_embeddings(batch)
        layers = checkpointed_layers(model)

        def measure(stage: int) -> tuple[int, int, int]:
            model.set_stage(stage)
            model.train()

            def step():
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    model(batch, targets, teacher_scale=teacher.logit_scale)

            torch.manual_seed(0)
            return saved_bytes(step, layers)

        plain = {stage: measure(stage) for stage in (0, 1)}
        enable_activation_checkpointing(model)
        for stage in (0, 1):
            total, largest, _ = plain[stage]
            model.set_stage(stage)
            ck_total, _, ck_inputs = measure(stage)
            trainable, frozen = param_bytes(model)
            n = cfg.run.global_batch_size
            rows.append((f"pretrain_stage{stage}", n, total / b, trainable, frozen + teacher_params))
            rows.append((f"pretrain_stage{stage} + activation_checkpointing", n, (ck_total + ck_inputs + largest) / b,
                         trainable, frozen + teacher_params))
        model = layers = None  # freed before the VQA model is built
        cfg = load_config(PAPER / "finetune_slake.yaml", paper_overrides(files, pretraining=False))
        vqa = AMiFVQA(cfg.model, candidate_answers(1000), ["yes", "no"])
        vb = vqa_batch(vqa, b)

        def ft():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                vqa(**vb)

        per_sample = saved_bytes(ft)[0] / b
        trainable, frozen = param_bytes(vqa)
        rows.append(("finetune (1 GPU, batch 48)", cfg.run.global_batch_size, per_sample, trainable, frozen))
        rows.append(("finetune (run.devices=2, 24 each)", 24, per_sample, trainable, frozen))
    out = []
    for name, bsz, per_sample, trainable, frozen in rows:
        total = (per_sample * bsz + 16 * trainable + 4 * frozen) / gib + ALLOWANCE_GIB
        out.append({"config": name, "per_device_batch": bsz, "saved_MiB_per_sample": round(per_sample / 2**20, 1),
                    "trainable_M": round(trainable / 1e6, 1), "frozen_M": round(frozen / 1e6, 1),
                    "estimate_GiB": round(total, 1)})
        print(f"{name:<48} batch {bsz:>3}: {per_sample / 2**20:7.1f} MiB per sample, "
              f"{trainable / 1e6:6.1f} M trainable, {frozen / 1e6:6.1f} M frozen -> ~{total:.0f} GiB")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
