"""`sparsebert finetune task=swag` then `evaluate`, end to end through the real CLI on small CSV
files in the original SWAG layout."""

import csv
import json
from pathlib import Path

import pytest
from conftest import sparsebert

pytestmark = pytest.mark.slow

HEADER = [
    "",
    "video-id",
    "fold-ind",
    "startphrase",
    "sent1",
    "sent2",
    "gold-source",
    "ending0",
    "ending1",
    "ending2",
    "ending3",
    "label",
]
# (sent1, sent2, four endings, the right one)
QUESTIONS = [
    (
        "She opens the fridge.",
        "She",
        ["takes out the milk.", "flies away.", "sings to the moon.", "becomes a tree."],
        0,
    ),
    (
        "The man ties his shoes.",
        "He",
        ["eats the laces.", "melts.", "starts to jog down the road.", "turns blue."],
        2,
    ),
    (
        "A dog sees a ball.",
        "The dog",
        ["reads a book.", "runs after the ball.", "files taxes.", "paints a wall."],
        1,
    ),
    (
        "The chef chops onions.",
        "The chef",
        ["drives a bus.", "swims upstream.", "orbits the sun.", "puts them in a pan."],
        3,
    ),
    (
        "A boy climbs a ladder.",
        "He",
        ["reaches the roof.", "dissolves.", "becomes a lake.", "barks loudly."],
        0,
    ),
    (
        "The singer takes the stage.",
        "She",
        ["plants potatoes.", "grabs the microphone.", "falls asleep at once.", "turns into sand."],
        1,
    ),
    (
        "Rain starts to fall.",
        "People",
        ["open their umbrellas.", "grow wings.", "melt into puddles.", "read the clouds."],
        0,
    ),
    (
        "The goalkeeper dives.",
        "He",
        ["bakes bread.", "writes a poem.", "catches the ball.", "floats upward."],
        2,
    ),
    (
        "A woman boards a train.",
        "She",
        ["eats the seat.", "sings to the rails.", "digs a tunnel.", "finds her seat."],
        3,
    ),
    (
        "The child blows out candles.",
        "Everyone",
        ["claps and cheers.", "leaves the planet.", "becomes silent stone.", "swims away."],
        0,
    ),
]


def write_swag_files(folder: Path) -> Path:
    """train.csv and val.csv in `folder` (the same questions in both)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("train.csv", "val.csv"):
        with open(folder / name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(HEADER)
            for i, (sent1, sent2, endings, label) in enumerate(QUESTIONS):
                start = f"{sent1} {sent2}"
                writer.writerow([i, f"video{i}", i, start, sent1, sent2, "gold", *endings, label])
    return folder


def test_swag_with_no_diag_writes_accuracy_and_predictions(workdir):
    data = write_swag_files(workdir / "swag")
    common = ("debug=smoke", "model=tiny")
    sparsebert(
        "finetune", "task=swag", f"task.data_dir={data}", "mask=no_diag", *common, cwd=workdir
    )
    sparsebert("evaluate", cwd=workdir)
    (run,) = (workdir / "runs" / "evaluate").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"eval/accuracy", "eval/headline", "mask/sparsity"} <= set(metrics)
    rows = (run / "predictions" / "dev.jsonl").read_text().splitlines()
    assert [json.loads(r)["idx"] for r in rows] == list(range(10))
    assert {json.loads(r)["prediction"] for r in rows} <= {0, 1, 2, 3}
