"""`sparsebert masks`: the catalogue as JSON and as a table, the --check exit status, heat maps."""

import json
import math

import torch

from sparsebert_cli.masks.patterns import PATTERNS
from sparsebert_cli.masks.plots import mosaic, plot_mask_grid
from sparsebert_cli.tools import masks_main as main

PAPER_SPARSITY = {
    "strided": 70.4,
    "fixed": 72.7,
    "longformer": 88.7,
    "logsparse": 89.8,
    "bigbird": 93.2,
    "star": 96.1,
}


def test_json_lists_every_pattern_with_the_paper_sparsities_at_128(capsys):
    assert main(["--seq-len", "128", "--json"]) == 0
    rows = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    assert list(rows) == list(PATTERNS)
    for name, expected in PAPER_SPARSITY.items():
        assert abs(rows[name]["sparsity"] - expected) <= 0.5
    assert rows["strided"]["params"] == {"stride": 4}
    assert set(rows["star"]["row_density"]) == {"min", "mean", "max"}
    assert rows["star"]["connectivity"]["reach_layers"] == 2


def test_table_names_every_pattern(capsys):
    assert main(["--seq-len", "16", "--heads", "2"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in PATTERNS)


def test_a_long_catalogue_says_which_pattern_it_measures_on_stderr(capsys, monkeypatch):
    """`masks --seq-len 4096` ran for a minute without a word; --json stays JSON on stdout."""
    from sparsebert_cli import tools

    monkeypatch.setattr(tools, "SLOW_CATALOGUE_N", 32)
    assert main(["--seq-len", "32", "--heads", "1", "--json"]) == 0
    captured = capsys.readouterr()
    assert [row["name"] for row in json.loads(captured.out)] == list(PATTERNS)
    said = captured.err.splitlines()
    assert said == [f"[sparsebert] masks: measuring {name} at n=32..." for name in PATTERNS]
    assert main(["--seq-len", "16", "--heads", "1", "--json"]) == 0  # below it: quiet
    assert capsys.readouterr().err == ""


def test_check_fails_when_a_band_cannot_span_the_layers(capsys):
    # The window preset (D ≤ 8) needs ⌈127 / 8⌉ = 16 layers at n = 128.
    assert main(["--check", "--layers", "12"]) == 1
    assert "not met by: window" in capsys.readouterr().out


def test_check_passes_when_every_mask_meets_the_conditions(capsys):
    assert main(["--check", "--layers", "16", "--json"]) == 0


def test_a_preset_with_a_key_the_schema_lacks_is_refused_in_one_line(tmp_path, monkeypatch, capsys):
    """A new pattern's preset with a parameter MaskConfig has no field for: `sparsebert masks`
    printed omegaconf's traceback."""
    import shutil

    from sparsebert_cli import config
    from sparsebert_cli.cli import main as sparsebert

    conf = shutil.copytree(config.conf_dir(), tmp_path / "conf")
    (conf / "mask" / "window.yaml").write_text("name: window\nwindow: 8\ndilation: 2\n")
    monkeypatch.setattr(config, "conf_dir", lambda: conf)
    assert sparsebert(["masks", "--seq-len", "32"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: conf/mask/window.yaml does not fit the mask schema")
    assert "dilation" in err and "Traceback" not in err


def test_mosaic_lays_tiles_out_by_layer_and_head_with_gaps():
    mask = torch.ones(2, 3, 2, 2, dtype=torch.bool)
    image = mosaic(mask, gap=1)
    assert image.shape == (5, 8)
    assert math.isnan(image[2, 0]) and math.isnan(image[0, 2])
    assert image[3:5, 6:8].tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_mosaic_of_a_long_mask_averages_each_tile_over_cells():
    """A long mask is drawn at TILE_PIXELS a side, each pixel the share of its cell that may
    attend (full resolution took ~14 GB at n = 4096 and crashed a finished search)."""
    mask = torch.zeros(1, 2, 8, 8, dtype=torch.bool)
    mask[0, 0, :4, :4] = True  # head 0: the top-left quarter
    mask[0, 1, ::2] = True  # head 1: every other query row
    image = mosaic(mask, gap=1, size=2)
    assert image.shape == (2, 5)
    assert image[:, :2].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    assert image[:, 3:].tolist() == [[0.5, 0.5], [0.5, 0.5]]


def test_the_mask_figure_of_a_long_mask_is_drawn_at_a_bounded_size(tmp_path):
    from matplotlib.image import imread

    path = plot_mask_grid(torch.rand(1, 2, 1000, 1000) < 0.1, tmp_path / "m.png", "long")
    assert imread(path).shape[0] < 1000


def test_heat_map_of_keep_probabilities_is_a_png(tmp_path):
    path = plot_mask_grid(torch.rand(2, 2, 8, 8), tmp_path / "probs.png", "σ(α)")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_length_whose_masks_do_not_fit_in_memory_is_refused_in_one_line(capsys, monkeypatch):
    """`masks --seq-len 100000` ended in an allocator traceback (120 GB asked)."""
    from sparsebert_cli.cli import main as sparsebert
    from sparsebert_cli.masks import patterns

    monkeypatch.setattr(patterns, "physical_memory", lambda: 24 * 2**30)
    assert sparsebert(["masks", "--seq-len", "100000"]) == 1
    said, err = capsys.readouterr().err.splitlines()  # the progress line, the error
    assert said == "[sparsebert] masks: measuring dense at n=100000..."
    assert err.startswith("error: the dense mask at n=100000 with 12 heads needs about 186 GiB")
    assert "more than this machine's 24 GiB" in err


def test_a_long_catalogue_stops_counting_reach_at_the_depth(capsys):
    """A band at n = 1024 needs ~120 layers to reach every token; each is an n × n product."""
    assert main(["--seq-len", "1024", "--heads", "1", "--layers", "3", "--json"]) == 0
    rows = {row["name"]: row["connectivity"] for row in json.loads(capsys.readouterr().out)}
    assert rows["window"]["reach_layers"] is None and rows["star"]["reach_layers"] == 2
