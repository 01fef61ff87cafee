"""Stylise your own photo with LearnedOptimizer (and Adam, for comparison) in an ordinary PyTorch loop.

    python examples/neural_art.py CONTENT STYLE [--size 128] [--steps 128] [--out outputs]

The optimizee is the image itself; the loss is Gatys et al.'s content + style + total variation on VGG-16
features (learned_optim.meta.tasks.art). STYLE is an image file or a generated style's name (mosaic). A style the
optimizer never saw in meta-training, at twice its training size, is the paper's harder test:

    python examples/neural_art.py my_photo.jpg $LEARNED_OPTIM_ART/style/hubble_deep_field.jpg --size 128
    python examples/neural_art.py my_photo.jpg mosaic --size 128

The features come from --vgg: a safetensors file in torchvision's vgg16().features layout or a Hub repo id; by
default $LEARNED_OPTIM_ART/vgg16_features.safetensors, else the ImageNet VGG-16 timm/vgg16.tv_in1k from the Hugging
Face Hub. Writes lstm.png and adam.png into --out.
"""

import argparse
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from learned_optim import LearnedOptimizer
from learned_optim.meta.tasks.art import StyleLoss, load_image, load_style, load_vgg16, save_image, square


def stylise(image, loss_fn, optimizer, steps, name):
    """``steps`` steps of ``optimizer`` on the pixels of ``image``; returns the last loss."""
    progress = tqdm(range(steps), desc=name, unit="step")
    for _ in progress:
        optimizer.zero_grad()
        loss = loss_fn(image[None])[0]
        loss.backward()
        optimizer.step()
        progress.set_postfix(loss=f"{loss.item():.4g}")
    return loss.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("content", help="your photo (any size; its centred square is used)")
    parser.add_argument("style", help="the style image, or a generated style's name (mosaic)")
    parser.add_argument("--size", type=int, default=128, help="side of the result in pixels (default: 128)")
    parser.add_argument("--steps", type=int, default=128, help="optimizer steps (default: 128, l2l-art's horizon)")
    parser.add_argument("--pretrained", default="l2l-art", help="learned optimizer (default: l2l-art)")
    parser.add_argument("--adam-lr", type=float, default=0.1,
                        help="Adam's learning rate (default: 0.1, about the tuned rate of docs/art)")
    parser.add_argument("--vgg", help="VGG-16 weights: safetensors file or Hub repo id (default: see above)")
    parser.add_argument("--out", default="outputs", help="folder for the images (default: ./outputs)")
    args = parser.parse_args()

    content = square(load_image(args.content), args.size)
    loss_fn = StyleLoss(load_vgg16(args.vgg), content[None], square(load_style(args.style), args.size))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    optimizers = {"lstm": lambda image: LearnedOptimizer([image], pretrained=args.pretrained),
                  "adam": lambda image: torch.optim.Adam([image], lr=args.adam_lr)}
    for name, make in optimizers.items():
        image = content.clone().requires_grad_()  # start at the content photo, as Gatys et al. may
        started = time.perf_counter()
        loss = stylise(image, loss_fn, make(image), args.steps, name)
        save_image(image, out / f"{name}.png")
        print(f"{name}: loss {loss:.4g} after {args.steps} steps ({time.perf_counter() - started:.1f} s) -> "
              f"{out / f'{name}.png'}")


if __name__ == "__main__":
    main()
