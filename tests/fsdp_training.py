"""Training a small Transformer with LearnedOptimizer over the processes of a torchrun (gloo), sharded by FSDP2 or
replicated by DDP, or in one process: the same global batches, so all must end with the same parameters.

    torchrun --standalone --nproc-per-node 2 tests/fsdp_training.py OUT.pt [--ddp] [--scale-rate R]
    python tests/fsdp_training.py OUT.pt --single [--scale-rate R]
"""

import argparse
import os

import torch

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta.tasks.text import CharTransformer

STEPS, BATCH, CONTEXT = 4, 8, 16


def train(sharded: bool, scale_rate: float, replicated: bool = False) -> dict:
    torch.manual_seed(0)
    model = CharTransformer(context=CONTEXT, width=16, layers=2)
    rank, world = 0, 1
    if sharded:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        dist.init_process_group("gloo")
        rank, world = dist.get_rank(), dist.get_world_size()
        if replicated:
            model = torch.nn.parallel.DistributedDataParallel(model)
        else:
            mesh = init_device_mesh("cpu", (world,))
            for block in model.blocks:
                fully_shard(block, mesh=mesh)
            fully_shard(model, mesh=mesh)
    optimizer = LearnedOptimizer(model.parameters(), pretrained.load().with_scale_rate(scale_rate))
    generator = torch.Generator().manual_seed(1)
    for _ in range(STEPS):
        tokens = torch.randint(128, (BATCH, CONTEXT + 1), generator=generator)
        mine = tokens.chunk(world)[rank]  # this process's share of the global batch
        optimizer.zero_grad()
        logits = model(mine[:, :-1])
        torch.nn.functional.cross_entropy(logits, mine[:, 1:].reshape(-1)).backward()
        optimizer.step()
    full = {name.removeprefix("module."): (p.full_tensor() if hasattr(p, "full_tensor") else p).detach().clone()
            for name, p in model.named_parameters()}
    shard_floats = sum(state["lstm_state"].numel() for state in optimizer.state.values())
    result = {"params": full, "state_floats": shard_floats, "paths": optimizer.last_step_paths,
              "scale_control": [group.get("scale_control") for group in optimizer.param_groups]}
    if sharded:
        import torch.distributed as dist

        states = [None] * world
        dist.all_gather_object(states, shard_floats)
        result["state_floats_per_rank"] = states
        dist.barrier()  # no process tears its connections down while another still uses them
        dist.destroy_process_group()
    return result if rank == 0 else None


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--single", action="store_true")
    parser.add_argument("--ddp", action="store_true")
    parser.add_argument("--scale-rate", type=float, default=0.0)
    args = parser.parse_args()
    result = train(not args.single and "WORLD_SIZE" in os.environ, args.scale_rate, args.ddp)
    if result is not None:
        torch.save(result, args.out)
