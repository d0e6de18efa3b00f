"""This process's place among torchrun's training processes, and the few numbers they add up together."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0  # global rank, 0 to world_size - 1
    local_rank: int = 0  # rank on this machine: the GPU index on CUDA
    world_size: int = 1  # processes in all, on every machine

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that talks to Dagster and MLflow and writes the adapter."""
        return self.rank == 0


def rank_info(environ: dict[str, str] | None = None) -> RankInfo:
    """The rank, local rank and world size torchrun set in the environment (one process when it did not)."""
    env = os.environ if environ is None else environ
    return RankInfo(int(env.get("RANK", 0)), int(env.get("LOCAL_RANK", 0)), int(env.get("WORLD_SIZE", 1)))


def sum_across_ranks(*values: int) -> tuple[int, ...]:
    """Each of `values` summed over every rank (an all-reduce), or as given when there is one process.

    Every rank must call it, with as many values, at the same point.
    """
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tuple(values)
    device = "cuda" if dist.get_backend() == "nccl" else "cpu"
    total = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(total)
    return tuple(int(v) for v in total.tolist())
