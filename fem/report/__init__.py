"""``fem report``: (re)build ``OUTPUT/report.md`` and ``OUTPUT/plots/*.png`` from whatever files a run left.

``load`` reads the files, ``plots`` draws the figures, ``render`` writes the markdown (``build_report``)."""

from fem.report.load import RunData, calibration_pairs, load_run, stage_acceptance
from fem.report.plots import PLOTS
from fem.report.render import build_report, render_report

__all__ = ["PLOTS", "RunData", "build_report", "calibration_pairs", "load_run", "render_report", "stage_acceptance"]
