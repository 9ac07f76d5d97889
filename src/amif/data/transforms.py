"""Image transforms for VQA fine-tuning, evaluation, pre-training and the soft-label teacher.

Built on Pillow and torch only (no torchvision). A pipeline is an :class:`ImageTransform`: a list of
steps ``step(img, rng) -> img`` on PIL images followed by conversion to a normalised float tensor
``[3, H, W]``. Random steps draw from the pipeline's own :class:`random.Random`, so results are
reproducible with ``seed=...`` and independent of the global ``random`` / ``torch`` state.

DataLoader workers: a forked worker starts with a copy of the parent's generator, so every worker
would produce the same augmentations. On its first call inside a worker (and again whenever the
worker's torch seed changes, i.e. each epoch without persistent workers) the pipeline reseeds its
generator from ``(seed, torch worker seed)``; the worker seed differs per worker and follows
``torch.manual_seed`` in the main process.

Recipes (docs/method.md#augmentation-recipes):

* :func:`build_train_transform` - VQA fine-tuning: random resized crop (scale 0.6-1) then RandAugment
  (2 ops, magnitude 7) with probability 0.8. No horizontal flip by default: left/right questions
  depend on the image orientation.
* :func:`build_eval_transform` - bicubic resize to ``image_size`` x ``image_size``.
* :func:`build_pretrain_transform` - crop (scale 0.7-1), colour jitter, grayscale, RandAugment(2, 4),
  Gaussian blur, horizontal flip.
* :func:`build_teacher_transform` - 224 x 224 bicubic resize for the soft-label teacher.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Callable, Sequence

import numpy as np
import torch
from PIL import Image, ImageEnhance, ImageFilter, ImageOps
from torch.utils.data import get_worker_info

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "RANDAUG_OPS",
    "PRETRAIN_RANDAUG_OPS",
    "ImageTransform",
    "Resize",
    "RandomResizedCrop",
    "RandomApply",
    "RandAugment",
    "ColorJitter",
    "RandomGrayscale",
    "GaussianBlur",
    "RandomHorizontalFlip",
    "RandomTranslate",
    "random_resized_crop",
    "random_resized_crop_box",
    "to_tensor_normalized",
    "build_train_transform",
    "build_eval_transform",
    "build_pretrain_transform",
    "build_teacher_transform",
]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Operations of the VQA fine-tuning RandAugment and of the pre-training one.
RANDAUG_OPS = (
    "Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness",
    "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate",
)
PRETRAIN_RANDAUG_OPS = ("Identity", "Equalize", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Rotate")

_FILL = (0, 0, 0)  # fill of geometric ops: black, the background of radiology images

Step = Callable[[Image.Image, random.Random], Image.Image]


def _as_rgb(img: Image.Image) -> Image.Image:
    if not isinstance(img, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(img).__name__}")
    return img if img.mode == "RGB" else img.convert("RGB")


def to_tensor_normalized(
    img: Image.Image, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> torch.Tensor:
    """PIL image -> float32 tensor ``[3, H, W]``: scaled to [0, 1], then ``(x - mean) / std`` per channel."""
    arr = np.asarray(_as_rgb(img), dtype=np.float32) / 255.0
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
    return (t - m) / s


# ----------------------------------------------------------------------------------------------
# random resized crop


def random_resized_crop_box(
    width: int,
    height: int,
    scale: tuple[float, float],
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    rng: random.Random,
) -> tuple[int, int, int, int]:
    """Sample a crop ``(left, top, w, h)``: area fraction uniform in ``scale``, aspect ratio log-uniform.

    Up to 10 draws; if none fits inside the image, a central crop with the aspect ratio clamped to
    ``ratio`` (the whole image when its own ratio is inside).
    """
    if not (0 < scale[0] <= scale[1]):
        raise ValueError(f"scale must satisfy 0 < min <= max, got {scale}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must satisfy 0 < min <= max, got {ratio}")
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            left = rng.randint(0, width - w)
            top = rng.randint(0, height - h)
            return left, top, w, h
    in_ratio = width / height
    if in_ratio < ratio[0]:
        w, h = width, int(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        w, h = int(round(height * ratio[1])), height
    else:
        w, h = width, height
    w, h = max(1, min(w, width)), max(1, min(h, height))
    return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop(
    img: Image.Image,
    size: int,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    *,
    rng: random.Random,
) -> Image.Image:
    """Crop a random region (see :func:`random_resized_crop_box`) and resize it bicubically to size x size."""
    left, top, w, h = random_resized_crop_box(img.width, img.height, scale, ratio, rng=rng)
    return img.resize((size, size), Image.Resampling.BICUBIC, box=(left, top, left + w, top + h))


# ----------------------------------------------------------------------------------------------
# steps: callables (img, rng) -> img


class Resize:
    """Deterministic bicubic resize to ``size`` x ``size`` (aspect ratio not kept, as in the reference)."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> Image.Image:
        if img.size == (self.size, self.size):
            return img
        return img.resize((self.size, self.size), Image.Resampling.BICUBIC)

    def __repr__(self) -> str:
        return f"Resize({self.size})"


class RandomResizedCrop:
    """Step form of :func:`random_resized_crop`."""

    def __init__(self, size: int, scale: tuple[float, float], ratio: tuple[float, float] = (3 / 4, 4 / 3)):
        self.size, self.scale, self.ratio = int(size), tuple(scale), tuple(ratio)

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        return random_resized_crop(img, self.size, self.scale, self.ratio, rng=rng)

    def __repr__(self) -> str:
        return f"RandomResizedCrop({self.size}, scale={self.scale}, ratio={self.ratio})"


class RandomApply:
    """Apply ``step`` with probability ``p``."""

    def __init__(self, step: Step, p: float) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {p}")
        self.step, self.p = step, float(p)

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        return self.step(img, rng) if rng.random() < self.p else img

    def __repr__(self) -> str:
        return f"RandomApply({self.step!r}, p={self.p})"


class RandomHorizontalFlip:
    def __init__(self, p: float = 0.5) -> None:
        self.p = float(p)

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        return ImageOps.mirror(img) if rng.random() < self.p else img

    def __repr__(self) -> str:
        return f"RandomHorizontalFlip(p={self.p})"


class RandomTranslate:
    """Shift by a whole number of pixels, up to ``max_fraction`` of the side in each axis, filling with
    black. Keeps every finding and its position relative to the anatomy (unlike a crop, which can cut a
    lesion off): the augmentation that makes a from-scratch encoder learn the demo's lesions."""

    def __init__(self, max_fraction: float) -> None:
        if not 0.0 <= max_fraction < 0.5:
            raise ValueError(f"translate must be in [0, 0.5), got {max_fraction}")
        self.max_fraction = float(max_fraction)

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        mx, my = (int(round(self.max_fraction * side)) for side in img.size)
        dx, dy = rng.randint(-mx, mx), rng.randint(-my, my)
        if dx == 0 and dy == 0:
            return img
        return img.transform(img.size, Image.Transform.AFFINE, (1, 0, -dx, 0, 1, -dy),
                             resample=Image.Resampling.NEAREST, fillcolor=_FILL)

    def __repr__(self) -> str:
        return f"RandomTranslate({self.max_fraction})"


class RandomGrayscale:
    def __init__(self, p: float = 0.1) -> None:
        self.p = float(p)

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        return img.convert("L").convert("RGB") if rng.random() < self.p else img

    def __repr__(self) -> str:
        return f"RandomGrayscale(p={self.p})"


class GaussianBlur:
    """Gaussian blur with a standard deviation drawn uniformly from ``sigma``."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)) -> None:
        self.sigma = (float(sigma[0]), float(sigma[1]))

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        return img.filter(ImageFilter.GaussianBlur(radius=rng.uniform(*self.sigma)))  # radius = std dev

    def __repr__(self) -> str:
        return f"GaussianBlur(sigma={self.sigma})"


class ColorJitter:
    """Random brightness, contrast, saturation (factors in [1-x, 1+x]) and hue shift (in [-h, h] turns).

    The four adjustments are applied in a random order, as in the usual ColorJitter.
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, hue: float = 0.1):
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = brightness, contrast, saturation, hue

    def __call__(self, img: Image.Image, rng: random.Random) -> Image.Image:
        order = [0, 1, 2, 3]
        rng.shuffle(order)
        for k in order:
            if k == 0 and self.brightness > 0:
                f = rng.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)
                img = ImageEnhance.Brightness(img).enhance(f)
            elif k == 1 and self.contrast > 0:
                f = rng.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)
                img = ImageEnhance.Contrast(img).enhance(f)
            elif k == 2 and self.saturation > 0:
                f = rng.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation)
                img = ImageEnhance.Color(img).enhance(f)
            elif k == 3 and self.hue > 0:
                img = _shift_hue(img, rng.uniform(-self.hue, self.hue))
        return img

    def __repr__(self) -> str:
        return f"ColorJitter({self.brightness}, {self.contrast}, {self.saturation}, {self.hue})"


def _shift_hue(img: Image.Image, shift: float) -> Image.Image:
    h, s, v = img.convert("HSV").split()
    hue = (np.asarray(h, dtype=np.int16) + int(round(shift * 255))) % 256
    return Image.merge("HSV", (Image.fromarray(hue.astype(np.uint8)), s, v)).convert("RGB")


# ----------------------------------------------------------------------------------------------
# RandAugment (ALBEF flavour)


def _affine(img: Image.Image, coeffs: tuple[float, ...]) -> Image.Image:
    return img.transform(img.size, Image.Transform.AFFINE, coeffs, resample=Image.Resampling.BILINEAR,
                         fillcolor=_FILL)


def _op_identity(img: Image.Image, m: float, sign: int, ra: RandAugment) -> Image.Image:
    return img


def _op_autocontrast(img: Image.Image, m: float, sign: int, ra: RandAugment) -> Image.Image:
    return ImageOps.autocontrast(img)


def _op_equalize(img: Image.Image, m: float, sign: int, ra: RandAugment) -> Image.Image:
    return ImageOps.equalize(img)


def _enhance_factor(m: float) -> float:
    return m / 10.0 * 1.8 + 0.1  # magnitude 0..10 -> factor 0.1..1.9 (1.0 at m = 5)


def _op_brightness(img: Image.Image, m: float, sign: int, ra: RandAugment) -> Image.Image:
    return ImageEnhance.Brightness(img).enhance(_enhance_factor(m))


def _op_sharpness(img: Image.Image, m: float, sign: int, ra: RandAugment) -> Image.Image:
    return ImageEnhance.Sharpness(img).enhance(_enhance_factor(m))


def _op_shear_x(img: Image.Image, m: float, sign: int, ra: RandAugment) -> Image.Image:
    s = sign * m / 10.0 * ra.max_shear
    cy = img.height / 2.0
    return _affine(img, (1.0, s, -s * cy, 0.0, 1.0, 0.0))  # shear about the image centre


def _op_shear_y(img: Image.Image, m: float, sign: int, ra: RandAugment) -> Image.Image:
    s = sign * m / 10.0 * ra.max_shear
    cx = img.width / 2.0
    return _affine(img, (1.0, 0.0, 0.0, s, 1.0, -s * cx))


def _op_translate_x(img: Image.Image, m: float, sign: int, ra: RandAugment) -> Image.Image:
    return _affine(img, (1.0, 0.0, sign * m / 10.0 * ra.max_translate, 0.0, 1.0, 0.0))


def _op_translate_y(img: Image.Image, m: float, sign: int, ra: RandAugment) -> Image.Image:
    return _affine(img, (1.0, 0.0, 0.0, 0.0, 1.0, sign * m / 10.0 * ra.max_translate))


def _op_rotate(img: Image.Image, m: float, sign: int, ra: RandAugment) -> Image.Image:
    return img.rotate(sign * m / 10.0 * ra.max_rotate, resample=Image.Resampling.BILINEAR, fillcolor=_FILL)


_OPS = {
    "Identity": _op_identity,
    "AutoContrast": _op_autocontrast,
    "Equalize": _op_equalize,
    "Brightness": _op_brightness,
    "Sharpness": _op_sharpness,
    "ShearX": _op_shear_x,
    "ShearY": _op_shear_y,
    "TranslateX": _op_translate_x,
    "TranslateY": _op_translate_y,
    "Rotate": _op_rotate,
}


class RandAugment:
    """RandAugment as in ALBEF: draw ``n`` operations (with replacement), apply each with probability 0.5.

    The magnitude ``m`` is on a 0-10 scale and fixed; geometric operations take a random sign.
    At ``m = 10``: shear 0.3, translation ``max_translate`` pixels (10, as in ALBEF), rotation 30
    degrees, brightness / sharpness factor 1.9 (the factor is ``m / 10 * 1.8 + 0.1``, 1.36 at m = 7).
    Geometric operations fill uncovered areas with black. Ops: ``Identity, AutoContrast, Equalize,
    Brightness, Sharpness, ShearX, ShearY, TranslateX, TranslateY, Rotate``.

    Call as ``ra(img)`` (own generator) or ``ra(img, rng)`` (inside a pipeline).
    """

    def __init__(
        self,
        n: int = 2,
        m: float = 7,
        ops: Sequence[str] = RANDAUG_OPS,
        rng: random.Random | None = None,
        *,
        p_op: float = 0.5,
        max_shear: float = 0.3,
        max_translate: float = 10.0,
        max_rotate: float = 30.0,
    ) -> None:
        unknown = [o for o in ops if o not in _OPS]
        if unknown:
            raise ValueError(f"unknown RandAugment op(s) {unknown}; known: {sorted(_OPS)}")
        if not ops:
            raise ValueError("RandAugment needs at least one op")
        if not 0 <= m <= 10:
            raise ValueError(f"magnitude must be in [0, 10], got {m}")
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        self.n, self.m, self.ops = int(n), float(m), tuple(ops)
        self.p_op = float(p_op)
        self.max_shear, self.max_translate, self.max_rotate = float(max_shear), float(max_translate), float(max_rotate)
        self.rng = rng if rng is not None else random.Random()

    def __call__(self, img: Image.Image, rng: random.Random | None = None) -> Image.Image:
        rng = rng if rng is not None else self.rng
        img = _as_rgb(img)
        for _ in range(self.n):
            name = self.ops[rng.randrange(len(self.ops))]
            if rng.random() < self.p_op:
                sign = 1 if rng.random() < 0.5 else -1
                img = _OPS[name](img, self.m, sign, self)
        return img

    def __repr__(self) -> str:
        return f"RandAugment(n={self.n}, m={self.m}, ops={list(self.ops)})"


# ----------------------------------------------------------------------------------------------
# pipeline


class ImageTransform:
    """PIL image -> normalised float tensor ``[3, size, size]``, through ``steps`` using its own generator.

    ``seed=None`` seeds from the OS; inside DataLoader workers the generator is reseeded from
    ``(seed, worker seed)`` (see the module docstring). :meth:`reseed` restarts the sequence.
    """

    def __init__(
        self,
        steps: Sequence[Step],
        image_size: int,
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
        seed: int | None = None,
    ) -> None:
        if len(mean) != 3 or len(std) != 3 or any(s <= 0 for s in std):
            raise ValueError("mean and std need 3 values each, std > 0")
        self.steps = list(steps)
        self.image_size = int(image_size)
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        self.seed = seed
        self.rng = random.Random(seed)
        self._worker_key: tuple[int, int] | None = None

    def reseed(self, seed: int | None) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self._worker_key = None

    def reseed_item(self, key: str) -> None:
        """Seed the generator from ``(seed, key)`` for the next call, in this process or worker alike
        (the per-worker reseeding is skipped): the augmentation of an item then depends on ``key`` only."""
        self.rng = random.Random(f"{self.seed}:{key}")
        info = get_worker_info()
        self._worker_key = None if info is None else (os.getpid(), int(info.seed))

    def _check_worker(self) -> None:
        info = get_worker_info()
        if info is None:
            return
        key = (os.getpid(), int(info.seed))
        if key != self._worker_key:
            self._worker_key = key
            self.rng = random.Random(f"{self.seed}:{info.seed}")

    def __call__(self, img: Image.Image) -> torch.Tensor:
        self._check_worker()
        img = _as_rgb(img)
        for step in self.steps:
            img = step(img, self.rng)
        if img.size != (self.image_size, self.image_size):  # safety net: always the promised shape
            img = img.resize((self.image_size, self.image_size), Image.Resampling.BICUBIC)
        return to_tensor_normalized(img, self.mean, self.std)

    def __repr__(self) -> str:
        inner = ", ".join(repr(s) for s in self.steps)
        return f"ImageTransform([{inner}], image_size={self.image_size})"


def build_train_transform(
    image_size: int,
    scale: tuple[float, float] = (0.6, 1.0),
    randaug_n: int = 2,
    randaug_m: float = 7,
    randaug_p: float = 0.8,
    hflip: bool = False,
    seed: int | None = None,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> ImageTransform:
    """VQA fine-tuning transform: crop, RandAugment with probability ``randaug_p``, (flip)."""
    steps: list[Step] = [RandomResizedCrop(image_size, scale)]
    if randaug_n > 0 and randaug_p > 0:
        steps.append(RandomApply(RandAugment(randaug_n, randaug_m, RANDAUG_OPS), randaug_p))
    if hflip:
        steps.append(RandomHorizontalFlip(0.5))
    return ImageTransform(steps, image_size, mean, std, seed)


def build_eval_transform(
    image_size: int, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> ImageTransform:
    """Deterministic evaluation transform: bicubic resize to ``image_size`` x ``image_size``."""
    return ImageTransform([Resize(image_size)], image_size, mean, std, seed=0)


def build_pretrain_transform(
    image_size: int,
    scale: tuple[float, float] = (0.7, 1.0),
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1),
    jitter_p: float = 0.6,
    grayscale_p: float = 0.1,
    randaug_n: int = 2,
    randaug_m: float = 4,
    randaug_p: float = 0.8,
    blur_sigma: tuple[float, float] = (0.1, 2.0),
    blur_p: float = 0.3,
    hflip_p: float = 0.5,
    translate: float = 0.0,
    seed: int | None = None,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> ImageTransform:
    """Student transform of pre-training; ``translate`` > 0 adds a :class:`RandomTranslate`."""
    steps: list[Step] = [
        RandomResizedCrop(image_size, scale),
        *([RandomTranslate(translate)] if translate > 0 else []),
        RandomApply(ColorJitter(*jitter), jitter_p),
        RandomGrayscale(grayscale_p),
        RandomApply(RandAugment(randaug_n, randaug_m, PRETRAIN_RANDAUG_OPS), randaug_p),
        RandomApply(GaussianBlur(blur_sigma), blur_p),
        RandomHorizontalFlip(hflip_p),
    ]
    return ImageTransform(steps, image_size, mean, std, seed)


def build_teacher_transform(
    image_size: int = 224, mean: Sequence[float] = CLIP_MEAN, std: Sequence[float] = CLIP_STD
) -> ImageTransform:
    """Soft-label teacher input: bicubic resize to ``image_size`` x ``image_size``, teacher's mean/std."""
    return ImageTransform([Resize(image_size)], image_size, mean, std, seed=0)
