"""Hydra callbacks: when a multirun of a result stage ends, the sweep folder gets its results table.

Enabled in conf/hydra/default.yaml under `hydra.callbacks`; a report failure is printed and never
changes the sweep's outcome. Sweeps of search or pretrain (no task results) get no summary.
"""

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from sparsebert_cli.progress import say


class SweepSummary(Callback):
    """Writes summary.md, summary.csv and summary.json into `hydra.sweep.dir` after a multirun."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            from sparsebert_cli.reporting.cli import write_summaries
            from sparsebert_cli.reporting.records import RESULT_STAGES

            if config.get("stage") not in RESULT_STAGES:
                return
            written = write_summaries(Path(config.hydra.sweep.dir))
        except Exception as error:  # the sweep's results stand whatever the report does
            say(f"no sweep summary: {error}", to_stderr=True)
            return
        say(f"sweep summary: {', '.join(map(str, written))}")
