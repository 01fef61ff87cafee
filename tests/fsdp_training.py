"""Training a small Transformer with LearnedOptimizer over the processes of a torchrun (gloo), sharded by FSDP2 or
replicated by DDP, or in one process: the same global batches, so all must end with the same parameters.

    torchrun --standalone --nproc-per-node 2 tests/fsdp_training.py OUT.pt [--ddp] [--scale-rate R]
        [--save DIR --stop-after K | --load DIR]
    python tests/fsdp_training.py OUT.pt --single [--scale-rate R]

With ``--save DIR --stop-after K`` the run saves model and optimizer with ``torch.distributed.checkpoint`` after step
K and stops there, as a killed job's last checkpoint; ``--load DIR`` resumes from it, on any number of processes.
"""

import argparse
import gc
import os

import torch

from learned_optim import LearnedOptimizer, pretrained
from learned_optim.meta.tasks.text import CharTransformer

STEPS, BATCH, CONTEXT = 4, 8, 16


def train(sharded: bool, scale_rate: float, replicated: bool = False, save: str | None = None,
          stop_after: int | None = None, load: str | None = None) -> dict:
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
    start = 0
    if load is not None:
        start = distributed_checkpoint(model, optimizer, load, "load")
    generator = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        tokens = torch.randint(128, (BATCH, CONTEXT + 1), generator=generator)
        if step < start:
            continue  # the batches the run before the checkpoint trained on
        if step == stop_after:
            distributed_checkpoint(model, optimizer, save, "save", step)
            break
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
        del model, optimizer  # DDP's reducer (whose teardown can hang without its process group) goes first
        gc.collect()
        dist.barrier()  # no process tears its connections down while another still uses them
        dist.destroy_process_group()
    return result if rank == 0 else None


def distributed_checkpoint(model, optimizer, folder: str, action: str, step: int = 0) -> int:
    """Save (the steps done, ``step``) or load model and optimizer with torch.distributed.checkpoint, as a training
    loop would; returns the steps done."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optimizer_state, "step": torch.tensor(step)}
    if action == "save":
        dcp.save(state, checkpoint_id=folder)
        return step
    dcp.load(state, checkpoint_id=folder)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
    return int(state["step"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--single", action="store_true")
    parser.add_argument("--ddp", action="store_true")
    parser.add_argument("--scale-rate", type=float, default=0.0)
    parser.add_argument("--save")
    parser.add_argument("--stop-after", type=int)
    parser.add_argument("--load")
    args = parser.parse_args()
    result = train(not args.single and "WORLD_SIZE" in os.environ, args.scale_rate, args.ddp, args.save,
                   args.stop_after, args.load)
    if result is not None:
        torch.save(result, args.out)
        print(f"{sum(p.numel() for p in result['params'].values()):,} parameters; LSTM state floats per process: "
              f"{result.get('state_floats_per_rank', [result['state_floats']])}")
