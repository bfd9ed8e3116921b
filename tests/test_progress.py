"""Progress displays: log records go through rich's console while a display is live."""

import io
import logging

import rich
from rich.console import Console

from sparsebert_cli import progress


def test_log_records_go_through_the_rich_console_while_a_display_is_live(monkeypatch):
    screen = io.StringIO()
    monkeypatch.setattr(rich, "_console", Console(file=screen, width=200))
    monkeypatch.setattr(progress, "on_terminal", lambda: True)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        with progress.route_logging():
            logging.getLogger("sparsebert_cli.test").warning("attention backend chosen")
        assert handler in root.handlers  # restored when the display ends
    finally:
        root.removeHandler(handler)
    assert stream.getvalue() == ""
    assert "attention backend chosen" in screen.getvalue()


def test_off_a_terminal_each_wait_is_one_start_and_one_done_line(monkeypatch, capsys):
    monkeypatch.setattr(progress, "on_terminal", lambda: False)
    with progress.waiting("task data"):
        pass
    assert list(progress.track(range(3), 3, "prediction")) == [0, 1, 2]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[sparsebert] task data..."
    assert lines[1].startswith("[sparsebert] task data: done in ")
    assert lines[2] == "[sparsebert] prediction (3 batches)"


def test_off_a_terminal_a_step_line_is_printed_once_per_change(tmp_path, capsys):
    """Logging an evaluation whose metrics are not shown printed the step line a second time,
    unchanged; a shown one (the MLM loss) adds its value to the line."""
    from types import SimpleNamespace

    from sparsebert_cli.training.logging import MetricLogger

    logger = MetricLogger(tmp_path, SimpleNamespace(name="none"), {"stage": "search"}, 4)
    logger.log(4, {"train/loss": 11.37, "train/lr": 1e-3})
    logger.log(4, {"eval/perplexity": 2.851e4})
    logger.log(4, {"eval/mlm_loss": 10.26})
    logger.log(4, {"train/loss": 11.0})
    # an evaluation at a step whose training numbers were not logged: the line had step 4's loss
    # and lr under step 5 (found by a training review)
    logger.log(5, {"eval/mlm_loss": 10.1})
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert lines == [
        "step 4/4  loss=11.37  lr=0.001",
        "step 4/4  loss=11.37  lr=0.001  mlm_loss=10.26",
        "step 4/4  loss=11  lr=0.001  mlm_loss=10.26",
        "step 5/4  mlm_loss=10.1",
    ]
