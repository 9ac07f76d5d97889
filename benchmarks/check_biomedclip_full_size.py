"""BiomedCLIP's loader at the released shapes: a random checkpoint in the open_clip layout with
BiomedCLIP's sizes (ViT-B/16 at 224 px, 12-layer BERT-base with 30,522 word pieces and 512 positions,
embed_dim 512), loaded by ``amif.teachers.load_teacher``, against the ViT / BERT equations written out
in ``amif.testing.biomedclip``. Prints the parameter count and the largest embedding
differences. Needs ~3 GB of memory and ~1 GB of temporary disk.

    python benchmarks/check_biomedclip_full_size.py
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch

from amif.teachers import load_teacher
from amif.testing.biomedclip import WORDS, reference_image, reference_text, write_biomedclip


def main() -> None:
    folder = Path(tempfile.mkdtemp()) / "BiomedCLIP"
    try:
        words = WORDS + [f"tok{i}" for i in range(30522 - len(WORDS))]
        state = write_biomedclip(folder, width=768, layers=12, patch=16, image_size=224, text_width=768,
                                 text_layers=12, embed_dim=512, words=words, max_positions=512)
        params = sum(v.numel() for k, v in state.items() if not k.endswith("position_ids"))
        teacher = load_teacher(folder)
        pixels = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        texts = ["the chest xray shows no acute effusion .", "ct of abdomen with a small mass"]
        tok = teacher.tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():
            image = (teacher.encode_images(pixels) - reference_image(state, pixels, heads=12)).abs().max()
            text = (teacher.encode_texts(texts)
                    - reference_text(state, tok["input_ids"], tok["attention_mask"], heads=12)).abs().max()
        print(f"parameters {params}; image size {teacher.image_size}, context {teacher.max_length}, "
              f"logit scale {teacher.logit_scale:.4f}")
        print(f"largest difference from the reference: image {image.item():.2e}, text {text.item():.2e}")
    finally:
        shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
