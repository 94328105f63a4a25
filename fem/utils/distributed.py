"""The process group as fem sees it: rank, world size, barrier, and rank files merged on the main process.

The rank comes from the launcher's environment (``RANK``, as torchrun / accelerate set it; 0 when not launched),
so "is this the main process" has one answer before and after accelerate's state exists. With several processes
``current_world()`` initialises accelerate's state (the process group the barrier uses).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from accelerate import PartialState

from fem.utils.io import read_jsonl, write_jsonl

T = TypeVar("T")


def process_rank() -> int:
    """This process's global rank under torchrun/accelerate (0 when not distributed)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return process_rank() == 0


@dataclass
class World:
    rank: int = 0
    size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            PartialState().wait_for_everyone()

    def shard(self, items: Sequence[T]) -> list[T]:
        """Every ``size``-th item starting at ``rank`` (round-robin keeps shards balanced and deterministic)."""
        return list(items[self.rank :: self.size])

    def chunks(self, items: Sequence[T], chunk_size: int) -> list[tuple[int, list[T]]]:
        """``items`` cut into chunks of ``chunk_size``; this rank's share as ``(chunk index, chunk)``: chunk ``c``
        goes to rank ``c % size``, so the cut (and each chunk's seed) does not depend on the world size."""
        cut = [list(items[i : i + chunk_size]) for i in range(0, len(items), chunk_size)]
        return self.shard(list(enumerate(cut)))

    def rank_file(self, path: Path, rank: int | None = None) -> Path:
        """Where a rank writes its part of ``path`` (``x.jsonl`` -> ``x.rank1.jsonl``; ``path`` itself alone)."""
        if self.size == 1:
            return path
        return path.with_name(path.name.replace(".jsonl", f".rank{self.rank if rank is None else rank}.jsonl"))

    def merge_rank_files(self, path: Path, *, key: Callable[[dict[str, Any]], Any], remove: bool = False) -> None:
        """After a barrier, the main process writes every rank's records of ``path`` to ``path`` (atomically) in
        ``key`` order, so the file is the same whatever the world size; ``remove`` deletes the rank files then.
        Alone, a process's rank file is ``path`` itself: nothing to merge."""
        self.barrier()
        if self.size == 1 or not self.is_main:
            return
        write_jsonl(
            path, sorted((r for rank in range(self.size) for r in read_jsonl(self.rank_file(path, rank))), key=key)
        )
        if remove:
            for rank in range(self.size):
                self.rank_file(path, rank).unlink(missing_ok=True)

    def device(self) -> str:
        if torch.cuda.is_available():
            return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        return "cpu"


def current_world() -> World:
    """The world of this process; initialises accelerate's state when launched with several processes."""
    world = World(rank=process_rank(), size=world_size())
    if world.size > 1:
        PartialState()  # joins the process group the barrier waits on
    return world
