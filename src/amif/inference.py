"""Single-image inference: load a saved model folder and answer questions about one image."""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from amif.answers import normalize_question
from amif.data.images import load_image
from amif.data.transforms import build_eval_transform
from amif.errors import CheckpointError, DataError
from amif.evaluation import predict_batch, resolve_device
from amif.explain import Explanation, explain_batch
from amif.models.vqa import AMiFVQA


class VQAPredictor:
    """``VQAPredictor.from_pretrained(folder).answer("scan.dcm", "Is there a lesion?")``."""

    def __init__(self, model: AMiFVQA):
        self.model = model.eval()
        self.transform = build_eval_transform(model.image_encoder.image_size)

    @classmethod
    def from_pretrained(cls, folder: str | Path, device: str | torch.device | None = None) -> VQAPredictor:
        """Load a saved VQA model folder, or a fine-tuning run folder holding one (:func:`amif.load_model`),
        onto ``device`` (default: CUDA when it is available, else the CPU)."""
        from amif.factory import load_model

        dev = resolve_device(device)
        model = load_model(folder)
        if not isinstance(model, AMiFVQA):
            raise CheckpointError(f"{folder}: a pre-training model folder; answering questions needs a fine-tuned "
                                  "VQA model (amif finetune's OUTPUT/model)")
        return cls(model.to(dev))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def answer(self, image: str | Path | Image.Image, question: str, top_k: int = 5) -> list[tuple[str, float]]:
        """Top ``top_k`` answers with probabilities for ``question`` about ``image`` (PNG/JPEG/DICOM or PIL)."""
        img = image if isinstance(image, Image.Image) else load_image(image)
        batch = {"pixel_values": self.transform(img.convert("RGB"))[None], "question": [normalize_question(question)]}
        pred = predict_batch(self.model, batch, top_k=top_k)[0]
        return list(zip(pred["answers"], pred["probs"]))

    def explain(self, image: str | Path | Image.Image, question: str, top_k: int = 5, n_words: int = 8,
                method: str = "tokens") -> Explanation:
        """Ranked answers, a patch heatmap of what the best answer depended on, the vocabulary words the
        GCA reads most and its mean gate (:mod:`amif.explain`). ``Explanation.heatmap`` is a numpy
        array; :func:`amif.explain_figure.save_explanation_png` draws the whole explanation."""
        img = image if isinstance(image, Image.Image) else load_image(image)
        try:
            q = normalize_question(question)
        except ValueError as e:
            raise DataError(f"the question is empty ({e})") from e
        pixels = self.transform(img.convert("RGB"))[None]
        expl = explain_batch(self.model, pixels, q, top_k=top_k, n_words=n_words, method=method)
        expl.image = img
        return expl
