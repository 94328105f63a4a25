"""Rank-aware logging: INFO on the main process, WARNING elsewhere."""

from __future__ import annotations

import logging
import sys

from fem.utils.distributed import is_main_process, process_rank, world_size

_FORMAT = "%(asctime)s %(levelname)s [fem%(rank)s] %(message)s"


class _RankFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.rank = f":{process_rank()}" if world_size() > 1 else ""
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
