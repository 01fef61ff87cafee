"""The cost of neural art with LearnedOptimizer vs Adam: time per step and memory, by image size.

    python benchmarks/neural_art.py [--sizes 64 128 256] [--steps 10] [--checkpoint l2l-art]

For each size, both optimizers run the same style-transfer problem (The Starry Night on a test photo,
learned_optim.meta.tasks.art) in an ordinary loop, measured in the same run: seconds per step (loss, backward and
the optimizer step together, and the optimizer step alone), and memory: the tensors the VGG-16 forward saves
for backward (the peak of a step, whatever the optimizer) and the optimizer's state. Prints ratios against
Adam. Needs the art folder ($LEARNED_OPTIM_ART) or --vgg/--art-root.
"""

from __future__ import annotations

import argparse
import time

import torch

from learned_optim import LearnedOptimizer
from learned_optim.meta.tasks.art import StyleLoss, find_style, load_image, load_vgg16, photos, square

import _report as report  # benchmarks/_report.py, beside this script


def saved_bytes(loss_fn, image) -> int:
    """Bytes of the activations autograd saves for backward in one loss evaluation (the weights it also
    saves are not counted: they exist anyway)."""
    weights = {p.data_ptr() for p in loss_fn.parameters()} | {b.data_ptr() for b in loss_fn.buffers()}
    total = 0

    def pack(tensor):
        nonlocal total
        if tensor.data_ptr() not in weights:
            total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss_fn(image[None])
    return total


def state_bytes(optimizer) -> int:
    return sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
               if torch.is_tensor(v))


def measure(loss_fn, content, make, steps: int) -> dict[str, float]:
    image = content.clone().requires_grad_()
    optimizer = make(image)
    total = step_only = 0.0
    for step in range(steps + 1):  # step 0 warms up (allocations, state creation)
        started = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(image[None])[0].backward()
        stepped = time.perf_counter()
        optimizer.step()
        if step > 0:
            total += time.perf_counter() - started
            step_only += time.perf_counter() - stepped
    return {"step_s": total / steps, "optimizer_s": step_only / steps, "state_mb": state_bytes(optimizer) / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--checkpoint", default="l2l-art")
    parser.add_argument("--vgg", help="VGG-16 weights (default: the art folder's)")
    parser.add_argument("--art-root", help="art folder (default: $LEARNED_OPTIM_ART)")
    args = report.parse_args(parser)

    features = load_vgg16(args.vgg, args.art_root)
    photo = photos(args.art_root, "test")[0][1]
    style = load_image(find_style("starry_night.jpg", args.art_root))
    print(f"{torch.get_num_threads()} torch threads; {features.description}; {args.steps} steps per measurement")
    print("| size | pixels x 3 | Adam s/step | LSTM s/step | ratio | LSTM step alone s | VGG saved MB | "
          "Adam state MB | LSTM state MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in args.sizes:
        content = square(photo, size)
        loss_fn = StyleLoss(features, content[None], square(style, size))
        adam = measure(loss_fn, content, lambda image: torch.optim.Adam([image], lr=0.1), args.steps)
        lstm = measure(loss_fn, content, lambda image: LearnedOptimizer([image], pretrained=args.checkpoint),
                       args.steps)
        saved = saved_bytes(loss_fn, content.clone().requires_grad_()) / 2**20
        print(f"| {size}x{size} | {content.numel():,} | {adam['step_s']:.3f} | {lstm['step_s']:.3f} | "
              f"{lstm['step_s'] / adam['step_s']:.2f} | {lstm['optimizer_s']:.4f} | {saved:.1f} | "
              f"{adam['state_mb']:.2f} | {lstm['state_mb']:.2f} |", flush=True)


if __name__ == "__main__":
    report.run(main)
