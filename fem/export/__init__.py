"""``fem export``: a training run's round as a shippable folder, with a hub model card.

``run`` reads the run and picks the round, ``folder`` writes the PEFT adapter or the merged model (``export_run``)
and uploads a written folder (``push_folder``), ``card`` renders its ``README.md`` from the run's files."""

from fem.export.card import model_card
from fem.export.folder import DTYPES, export_run, push_folder
from fem.export.run import ExportError, RunSource, read_run

__all__ = ["DTYPES", "ExportError", "RunSource", "export_run", "model_card", "push_folder", "read_run"]
