"""Rank-aware logging: INFO on the main process, WARNING elsewhere (no accelerate import needed)."""

from __future__ import annotations

import logging
import os
import sys

_FORMAT = "%(asctime)s %(levelname)s [fem%(rank)s] %(message)s"


def process_rank() -> int:
    """This process's global rank under torchrun/accelerate (0 when not distributed)."""
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    return process_rank() == 0


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        rank = process_rank()
        record.rank = f":{rank}" if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        return True


def setup_logging(level: int | None = None) -> None:
    """Configure the ``fem`` logger once; quieter on non-main ranks."""
    logger = logging.getLogger("fem")
    if logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    handler.addFilter(_RankFilter())
    logger.addHandler(handler)
    logger.setLevel(level if level is not None else (logging.INFO if is_main_process() else logging.WARNING))
    logger.propagate = False


def get_logger(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("fem") else f"fem.{name}")
