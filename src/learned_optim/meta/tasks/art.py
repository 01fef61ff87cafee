r"""Neural art (Gatys et al., 2016) as a task family: the optimizee is an image.

The loss of an image :math:`x` (RGB in [0, 1], ``[3, H, W]``) for a content photo :math:`p` and a style
image :math:`s` is

.. math::
    f(x) = \alpha\, \overline{(F_{4,2}(x) - F_{4,2}(p))^2}
         + \beta \sum_{l \in \{1\_1, 2\_1, 3\_1, 4\_1, 5\_1\}} \overline{(G_l(x) - G_l(s))^2}
         + \gamma\, \big(\overline{(\partial_h x)^2} + \overline{(\partial_w x)^2}\big),

where :math:`F_l` are the frozen VGG-16 features after the ReLU of conv layer :math:`l` (``[C, H_l, W_l]``),
:math:`G_l = F_l F_l^\top / (C H_l W_l)` their Gram matrix and the bars are means over entries
(:data:`WEIGHTS`: :math:`\alpha, \beta, \gamma`). The style's Gram matrices are taken from the style image
resized to the problem's size. As Gatys et al. optionally do, the image starts at the content photo.

Problems of a split draw a random square crop (a side of 50-100% of the photo's shorter side, randomly
flipped) of one of the split's photos and resize it to ``size``: the paper meta-trains on many content
images at 64x64; here :data:`SPLITS` keeps whole photos apart for validation and test.

The style is one image, or ``"family"``: each problem draws its style from its split's family
(:func:`style_family`), so that a network meets many styles. Training draws the art folder's style images that are
not held out (:data:`HELD_OUT_STYLES`), the training photos, and generated stripes, checks and noise
(:mod:`~learned_optim.meta.tasks.textures`), each as a random crop with a random colour and contrast variant;
validation draws crops of the validation photos and of generated textures; test, the held-out styles whole. A task
may also draw its size per problem (e.g. 64 and 128), a meta-batch sharing the size of its first problem.

The features come from a VGG-16 in torchvision's ``vgg16().features`` layout (:func:`load_vgg16`): a local
safetensors file or a Hugging Face Hub repo such as ``timm/vgg16.tv_in1k``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import textures
from .base import Problem, ProblemBatch, Task, seeded
from .families import SampledArchitectureTask, _choice
from .mnist import DataError

ENV_VAR = "LEARNED_OPTIM_ART"
"""Folder with ``vgg16_features.safetensors``, ``content/`` and ``style/`` (the layout of ``shared/data/art``)."""
HUB_VGG16 = "timm/vgg16.tv_in1k"
"""The ImageNet VGG-16 on the Hub, used when no local weights are given or found."""
CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
"""Indices of the 13 conv layers in ``vgg16().features``; a ReLU follows each."""
POOLS = (4, 9, 16, 23)
"""Indices of the 2x2 max-poolings."""
STYLE_LAYERS = (1, 6, 11, 18, 25)
"""relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (indices of ``vgg16().features`` outputs)."""
CONTENT_LAYER = 20
"""relu4_2."""
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
WEIGHTS = {"content": 0.01, "style": 1.0, "tv": 10.0}
r""":math:`\alpha, \beta, \gamma`: the three weighted terms are of the same order (0.1-0.3) after 128 steps of tuned
Adam at 64x64 on The Starry Night; the style term, ~160 at the content photo, is what the optimizer works on."""
MIN_CROP = 0.5
"""The smallest content crop's side, as a fraction of the photo's shorter side (validation and test crops)."""
SPLITS = {
    "validation": ("china.jpg", "imagenet_05_853.jpg", "imagenet_11_630.jpg", "imagenet_17_22.jpg"),
    "test": ("astronaut.png", "chelsea.png", "coffee.png", "imagenet_03_990.jpg", "imagenet_09_455.jpg",
             "imagenet_15_99.jpg"),
}
"""Content photos held out for validation and test; every other photo in ``content/`` is for training."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
GENERATED_STYLES = {"mosaic": (textures.mosaic, 1_000_003)}
"""Styles made by code, by name: the generator and the seed of the one image the name stands for."""
HELD_OUT_STYLES = ("ihc.png", "hubble_deep_field.jpg", "mosaic")
"""The style family's test split: never drawn in meta-training or validation (the mosaic's generator neither)."""
STYLE_MIN_CROP = 0.3
"""The smallest crop of a training or validation style, as a fraction of its shorter side: the style's scale varies."""
FAMILY = "family"
"""The ``style`` that draws each problem's style from its split's family."""
StyleSource = Callable[[torch.Generator], Tensor]
"""Draws a style image ``[3, H, W]`` in [0, 1] from a generator."""


def find_art(root: str | os.PathLike | None = None) -> Path:
    """The art folder: ``root``, else the folder named by ``$LEARNED_OPTIM_ART``."""
    folder = root if root is not None else os.environ.get(ENV_VAR)
    if folder is None:
        raise DataError(f"no art folder given: pass root= (--art-root) or set {ENV_VAR} to a folder with "
                        "vgg16_features.safetensors (optional), content/ and style/")
    if not (Path(folder) / "content").is_dir() or not (Path(folder) / "style").is_dir():
        raise DataError(f"{folder} is not an art folder: it needs content/ and style/ subfolders of images")
    return Path(folder)


def load_image(path: str | os.PathLike) -> Tensor:
    """An image file as ``[3, H, W]`` float32 RGB in [0, 1]."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
    except (OSError, ValueError) as error:
        raise DataError(f"cannot read image {path}: {error}") from error
    return torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8).view(rgb.height, rgb.width, 3) \
        .permute(2, 0, 1).float().div_(255)


def save_image(image: Tensor, path: str | os.PathLike) -> None:
    """Write ``[3, H, W]`` RGB (clamped to [0, 1]) as an image file (the format from the suffix)."""
    from PIL import Image

    pixels = image.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(1, 2, 0).contiguous().cpu()
    Image.fromarray(pixels.numpy()).save(path)


def square(image: Tensor, size: int, side: int | None = None, top: int = 0, left: int = 0,
           flip: bool = False) -> Tensor:
    """The ``side x side`` crop at ``(top, left)`` (default: the centred square of the shorter side), resized
    to ``size x size`` with antialiasing."""
    height, width = image.shape[-2:]
    if side is None:
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
    crop = image[..., top:top + side, left:left + side]
    if flip:
        crop = crop.flip(-1)
    return F.interpolate(crop[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]


def random_square(image: Tensor, size: int, min_fraction: float, generator: torch.Generator) -> Tensor:
    """A random square crop of ``image`` (its side ``min_fraction``-100% of the shorter side, flipped with probability
    1/2), resized to ``size x size``."""
    height, width = image.shape[-2:]
    fraction = min_fraction + (1 - min_fraction) * float(torch.rand((), generator=generator))
    side = max(1, int(min(height, width) * fraction))
    top = int(torch.randint(height - side + 1, (), generator=generator))
    left = int(torch.randint(width - side + 1, (), generator=generator))
    flip = bool(torch.rand((), generator=generator) < 0.5)
    return square(image, size, side, top, left, flip)


class VGGFeatures(nn.Module):
    """VGG-16's conv layers up to relu5_1, frozen; ``forward(images [B, 3, H, W] in [0, 1])`` returns the
    features at ``layers`` (indices of ``vgg16().features`` outputs), ImageNet normalisation included.
    ``description`` says which weights, for reports."""

    def __init__(self, state: dict[str, Tensor], description: str = "VGG-16") -> None:
        super().__init__()
        self.description = description
        layers: list[nn.Module] = []
        for index in range(max(STYLE_LAYERS + (CONTENT_LAYER,)) + 1):
            if index in CONVS:
                weight = state[f"features.{index}.weight"]
                conv = nn.Conv2d(weight.shape[1], weight.shape[0], 3, padding=1)
                conv.weight.data.copy_(weight)
                conv.bias.data.copy_(state[f"features.{index}.bias"])
                layers.append(conv)
            else:
                layers.append(nn.MaxPool2d(2) if index in POOLS else nn.ReLU())
        self.layers = nn.ModuleList(layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def forward(self, images: Tensor, layers: tuple[int, ...] = STYLE_LAYERS + (CONTENT_LAYER,)) -> dict[int, Tensor]:
        x, out = (images - self.mean) / self.std, {}
        for index, layer in enumerate(self.layers[:max(layers) + 1]):
            x = layer(x)
            if index in layers:
                out[index] = x
        return out


def _expected_shapes() -> dict[str, tuple[int, ...]]:
    channels = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)
    shapes, fan_in = {}, 3
    for index, out in zip(CONVS, channels):
        shapes[f"features.{index}.weight"], shapes[f"features.{index}.bias"] = (out, fan_in, 3, 3), (out,)
        fan_in = out
    return shapes


def load_vgg16(source: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> VGGFeatures:
    """VGG-16 features from ``source``: a safetensors file, a folder holding ``vgg16_features.safetensors``
    or ``model.safetensors``, or a Hugging Face Hub repo id (e.g. :data:`HUB_VGG16`). Default: the art
    folder's ``vgg16_features.safetensors`` (see :func:`find_art`), else :data:`HUB_VGG16`.

    Keys and shapes must be those of torchvision's ``vgg16().features`` (others, such as a classifier
    head, are ignored); the weights are used in float32.

    Raises:
        DataError: the file is missing or unreadable, or lacks a conv layer or has one of the wrong shape.
    """
    from safetensors import SafetensorError, safe_open

    if source is None:
        folder = root if root is not None else os.environ.get(ENV_VAR)
        local = Path(folder, "vgg16_features.safetensors") if folder is not None else None
        source = local if local is not None and local.is_file() else HUB_VGG16
    path = Path(source)
    if path.is_dir():
        path = next((path / name for name in ("vgg16_features.safetensors", "model.safetensors")
                     if (path / name).is_file()), path / "model.safetensors")
    elif not path.exists() and str(source).count("/") == 1 and not str(source).endswith(".safetensors"):
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        try:
            path = Path(hf_hub_download(str(source), "model.safetensors"))
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
            raise DataError(f"cannot get VGG-16 weights {source!r} from the Hugging Face Hub ({error}); pass a local "
                            f"safetensors file or set {ENV_VAR} to a folder with vgg16_features.safetensors") from error
    if not path.is_file():
        raise DataError(f"VGG-16 weights not found: {path}; pass a safetensors file in torchvision's vgg16().features "
                        f"layout, a folder holding one, or a Hub repo id such as {HUB_VGG16}")
    expected = _expected_shapes()
    try:  # only the conv layers are read: a full model's classifier (timm's file) stays on disk
        with safe_open(path, "pt") as handle:
            origin = (handle.metadata() or {}).get("source", "")
            present = set(handle.keys())
            state = {key: handle.get_tensor(key) for key in expected if key in present}
    except (SafetensorError, OSError) as error:
        raise DataError(f"cannot read VGG-16 weights {path}: {error}") from error
    missing = sorted(set(expected) - set(state))
    if missing:
        raise DataError(f"{path} is not a VGG-16 in torchvision's vgg16().features layout: missing {missing[:4]}"
                        f"{' ...' if len(missing) > 4 else ''}")
    wrong = [f"{key} {tuple(state[key].shape)} (expected {shape})" for key, shape in expected.items()
             if tuple(state[key].shape) != shape]
    if wrong:
        raise DataError(f"{path}: wrong shapes: {', '.join(wrong[:3])}")
    description = "VGG-16 (HED fine-tuned)" if "HED" in origin else f"VGG-16 ({source})"
    return VGGFeatures({key: state[key].float() for key in expected}, description)


def gram(features: Tensor) -> Tensor:
    """:math:`F F^\\top / (C H W)` of ``[B, C, H, W]`` features, ``[B, C, C]``."""
    batch, channels, height, width = features.shape
    flat = features.reshape(batch, channels, height * width)
    return flat @ flat.transpose(1, 2) / (channels * height * width)


class StyleLoss(nn.Module):
    r"""The loss of the module docstring for a batch of images, each against its own content target and
    style target: ``styles`` is one style ``[3, H, W]`` for every image or one per image ``[B, 3, H, W]``;
    ``forward(images [B, 3, H, W]) -> [B]``."""

    def __init__(self, features: VGGFeatures, contents: Tensor, styles: Tensor,
                 weights: dict[str, float] = WEIGHTS) -> None:
        super().__init__()
        self.features = features
        self.weights = dict(weights)
        with torch.no_grad():
            self.content_targets = features(contents, (CONTENT_LAYER,))[CONTENT_LAYER]
            style_features = features(styles if styles.dim() == 4 else styles[None], STYLE_LAYERS)
            self.style_targets = [gram(style_features[layer]) for layer in STYLE_LAYERS]

    def terms(self, images: Tensor) -> dict[str, Tensor]:
        """The content, style and total-variation terms, unweighted, ``[B]`` each."""
        features = self.features(images)
        content = (features[CONTENT_LAYER] - self.content_targets).pow(2).flatten(1).mean(1)
        style = sum((gram(features[layer]) - target).pow(2).flatten(1).mean(1)
                    for layer, target in zip(STYLE_LAYERS, self.style_targets))
        tv = ((images[..., 1:, :] - images[..., :-1, :]).pow(2).flatten(1).mean(1)
              + (images[..., :, 1:] - images[..., :, :-1]).pow(2).flatten(1).mean(1))
        return {"content": content, "style": style, "tv": tv}

    def forward(self, images: Tensor) -> Tensor:
        return sum(self.weights[name] * term for name, term in self.terms(images).items())


def photos(root: str | os.PathLike | None, split: str) -> list[tuple[str, Tensor]]:
    """``(name, image)`` of the content photos of ``split`` (``"train"``, ``"validation"``, ``"test"``)."""
    folder = find_art(root) / "content"
    names = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    held_out = {name for split_names in SPLITS.values() for name in split_names}
    chosen = ([n for n in names if n not in held_out] if split == "train"
              else [n for n in names if n in SPLITS.get(split, ())])
    if split not in ("train", *SPLITS) or not chosen:
        raise DataError(f"no content photos for split {split!r} in {folder} (splits: train, {', '.join(SPLITS)})")
    return [(name, load_image(folder / name)) for name in chosen]


def find_style(style: str | os.PathLike, root: str | os.PathLike | None = None) -> Path:
    """A style image's file: a path, or a file name in the art folder's ``style/``."""
    if Path(style).is_file():
        return Path(style)
    try:
        path = find_art(root) / "style" / str(style)
    except DataError as error:
        raise DataError(f"style image {style!r} not found; pass the path of an image file, a generated style "
                        f"({', '.join(GENERATED_STYLES)}) or, for the art folder's styles, {error}") from None
    if not path.is_file():
        available = sorted(p.name for p in path.parent.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        raise DataError(f"style image {style!r} not found; pass a path, one of {available}, a generated style "
                        f"({', '.join(GENERATED_STYLES)}) or {FAMILY!r}")
    return path


def load_style(style: str | os.PathLike, root: str | os.PathLike | None = None) -> Tensor:
    """A style image ``[3, H, W]``: a generated style's name (:data:`GENERATED_STYLES`), a path, or a file name in the
    art folder's ``style/``."""
    if str(style) in GENERATED_STYLES:
        generate, seed = GENERATED_STYLES[str(style)]
        return generate(seeded(seed))
    return load_image(find_style(style, root))


class StyleFamily:
    """Draws a style (a :data:`StyleSource`): a kind of ``kinds`` (name -> its sources), uniformly, then one of its
    sources, uniformly; then, with ``min_crop``, a random crop (:func:`random_square`, at the crop's own resolution up
    to 256 pixels) and, with ``variants``, a random colour and contrast variant (:func:`textures.colour_variant`)."""

    def __init__(self, kinds: dict[str, list[StyleSource]], min_crop: float | None = None,
                 variants: bool = False) -> None:
        self.kinds = {name: tuple(sources) for name, sources in kinds.items() if sources}
        self.min_crop = min_crop
        self.variants = variants

    def __call__(self, generator: torch.Generator) -> Tensor:
        image = _choice(_choice(tuple(self.kinds.values()), generator), generator)(generator)
        if self.min_crop is not None:
            image = random_square(image, min(textures.SIDE, *image.shape[-2:]), self.min_crop, generator)
        return textures.colour_variant(image, generator) if self.variants else image


def _fixed(images: list[Tensor]) -> list[StyleSource]:
    return [lambda generator, image=image: image for image in images]


def style_family(split: str, root: str | os.PathLike | None = None) -> StyleFamily:
    """The styles of ``split``: for ``"train"`` three kinds, the style folder's images but :data:`HELD_OUT_STYLES`,
    the training photos and the generated :data:`textures.TRAINING_TEXTURES`, cropped (:data:`STYLE_MIN_CROP`) and
    varied in colour; for ``"validation"`` two, the validation photos and fresh draws of the generated textures,
    cropped; for ``"test"`` the held-out styles, whole."""
    if split == "train":
        folder = find_art(root) / "style"
        paintings = sorted(p.name for p in folder.iterdir()
                           if p.suffix.lower() in IMAGE_SUFFIXES and p.name not in HELD_OUT_STYLES)
        return StyleFamily({"style images": _fixed([load_image(folder / name) for name in paintings]),
                            "photos": _fixed([image for _, image in photos(root, "train")]),
                            "generated": list(textures.TRAINING_TEXTURES.values())},
                           STYLE_MIN_CROP, variants=True)
    if split == "validation":
        return StyleFamily({"photos": _fixed([image for _, image in photos(root, "validation")]),
                            "generated": list(textures.TRAINING_TEXTURES.values())}, STYLE_MIN_CROP)
    if split == "test":
        return StyleFamily({"held out": _fixed([load_style(name, root) for name in HELD_OUT_STYLES])})
    raise DataError(f"no styles for split {split!r} (splits: train, {', '.join(SPLITS)})")


class StyleTransferTask(Task):
    """Style transfer problems: content crops of ``photos`` in ``style``, ``size x size`` pixels.

    Args:
        features (VGGFeatures): the frozen feature network (:func:`load_vgg16`).
        photos (list[Tensor]): content photos ``[3, H, W]`` in [0, 1], any sizes.
        style (Tensor or StyleSource): the style image ``[3, H, W]``, or what draws each problem's style (drawn after
            its content); either is resized (centred square) to ``size``.
        size (int, optional): side of the optimized image in pixels (default: 64).
        weights (dict, optional): :math:`\\alpha, \\beta, \\gamma` (default: :data:`WEIGHTS`).
        min_crop (float, optional): the smallest crop's side, a fraction of the photo's shorter side in (0, 1]
            (default: :data:`MIN_CROP`).
        device (torch.device, optional): where the problems live (default: CPU).
    """

    def __init__(self, features: VGGFeatures, photos: list[Tensor], style: Tensor | StyleSource, size: int = 64,
                 weights: dict[str, float] = WEIGHTS, device: torch.device | str | None = None,
                 min_crop: float = MIN_CROP) -> None:
        if size < 16:
            raise ValueError(f"Invalid size: {size}; VGG-16's relu5_1 needs images of at least 16x16 pixels")
        if not 0 < min_crop <= 1:
            raise ValueError(f"Invalid min_crop: {min_crop}; the smallest crop's side is a fraction of the photo's "
                             "shorter side in (0, 1]")
        self.features = features.to(device)
        self.photos = photos
        self.style = square(style, size).to(device) if isinstance(style, Tensor) else style
        self.size = size
        self.weights = weights
        self.device = device
        self.min_crop = min_crop

    def content(self, generator: torch.Generator) -> Tensor:
        """A random square crop (``min_crop``-100% of the shorter side, maybe flipped) of a random photo,
        ``size x size``."""
        photo = self.photos[int(torch.randint(len(self.photos), (), generator=generator))]
        return random_square(photo, self.size, self.min_crop, generator).to(self.device)

    def images(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """A problem's content (:meth:`content`) and style ``[3, size, size]`` (the task's one style, or one drawn
        from its source after the content)."""
        content = self.content(generator)
        if isinstance(self.style, Tensor):
            return content, self.style
        return content, square(self.style(generator), self.size).to(self.device)

    def sample(self, generator: torch.Generator) -> Problem:
        content, style = self.images(generator)
        loss_fn = StyleLoss(self.features, content[None], style, self.weights)
        return Problem({"image": content.clone()}, lambda params, step: loss_fn(params["image"][None])[0])

    def sample_many(self, generators: list[torch.Generator]) -> ProblemBatch:
        """The ``K`` images go through the feature network as one batch."""
        contents, styles = (torch.stack(images) for images in zip(*map(self.images, generators)))
        one_style = isinstance(self.style, Tensor)  # its features once, not once per problem
        loss_fn = StyleLoss(self.features, contents, self.style if one_style else styles, self.weights)
        return ProblemBatch({"image": contents.clone()}, lambda params, step: loss_fn(params["image"]))


class StyleTransferSizes(SampledArchitectureTask):
    """Style transfer problems whose size each problem draws (uniformly) from ``sizes``, the rest as
    :class:`StyleTransferTask` takes them (``**options``)."""

    def __init__(self, sizes: tuple[int, ...], **options) -> None:
        super().__init__()
        self.sizes = sizes
        self.features = options["features"]
        self.by_size = {size: StyleTransferTask(size=size, **options) for size in sizes}  # each size checked now

    def config(self, generator: torch.Generator) -> int:
        return _choice(self.sizes, generator)

    def task(self, config: int) -> StyleTransferTask:
        return self.by_size[config]

    def images(self, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The content and style of the problem :meth:`sample` draws with ``generator``."""
        return self._task_for(generator).images(generator)


def style_transfer_task(style: str = "starry_night.jpg", size: int | list[int] = 64, split: str = "train",
                        root: str | os.PathLike | None = None, vgg: str | None = None,
                        device: torch.device | str | None = None, min_crop: float = MIN_CROP) -> Task:
    """The neural-art task on the art folder's photos of ``split`` with ``style`` (a file in ``style/``, a path, a
    generated style's name, or :data:`FAMILY`: the split's :func:`style_family`), features from ``vgg`` (see
    :func:`load_vgg16`), ``size`` pixels a side (a list: drawn per problem). ``min_crop`` augments the training split
    only (smaller crops zoom in: smoother, less textured contents); validation and test crops keep :data:`MIN_CROP`,
    the crops that networks are selected and reported on."""
    sizes = tuple(size) if isinstance(size, (list, tuple)) else (size,)
    if not sizes or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise ValueError(f"Invalid size: {size!r}; give the image side in pixels, or a list of sides to draw from")
    options = {"features": load_vgg16(vgg, root), "photos": [image for _, image in photos(root, split)],
               "style": style_family(split, root) if style == FAMILY else load_style(style, root),
               "device": device, "min_crop": min_crop if split == "train" else MIN_CROP}
    return StyleTransferTask(size=sizes[0], **options) if len(sizes) == 1 else StyleTransferSizes(sizes, **options)
