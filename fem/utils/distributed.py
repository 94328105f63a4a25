"""The process group as the EM loop sees it: rank, world size, barrier (accelerate when launched, else 1 process)."""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def shard(self, items: list) -> list:
        """Every ``size``-th item starting at ``rank`` (round-robin keeps shards balanced and deterministic)."""
        return items[self.rank :: self.size]

    def device(self) -> str:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        return "cpu"


def current_world() -> World:
    """The world of this process; initialises accelerate's state when launched with several processes."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return World()
    from accelerate import PartialState

    state = PartialState()
    return World(rank=state.process_index, size=state.num_processes)
