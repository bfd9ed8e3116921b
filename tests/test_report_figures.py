"""Importance figures of a search run, the binarised mask of a run, the pattern grid."""

import json

import pytest
import torch
from matplotlib.image import imread
from matplotlib.text import Text
from safetensors.torch import save_file

from sparsebert_cli import runs
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.masks.artifact import save_mask
from sparsebert_cli.masks.catalogue import presets
from sparsebert_cli.masks.patterns import PATTERNS, pattern_mask
from sparsebert_cli.masks.stats import sparsity
from sparsebert_cli.reporting.cli import main
from sparsebert_cli.reporting.importance import snapshot_indices, write_importance_figures
from sparsebert_cli.reporting.mask_figures import write_pattern_grid, write_run_mask_figure

T, L, H, N = 5, 1, 2, 6


@pytest.fixture
def search_run(tmp_path):
    """A search run with a seeded random trace [T, L, H, n, n] and its binarised mask."""
    run_dir = tmp_path / "runs" / "search" / "r1"
    probs = torch.rand(T, L, H, N, N, generator=torch.Generator().manual_seed(0))
    probs[:, :, :, range(N), range(N)] = 0.01 * torch.arange(1, T + 1)[:, None, None, None]
    (run_dir / "artifacts").mkdir(parents=True)
    save_file(
        {"probs": probs, "steps": torch.arange(T, dtype=torch.int64) * 10},
        run_dir / "artifacts" / "importance_trace.safetensors",
    )
    save_mask(run_dir / "artifacts", probs[-1] > 0.5, {"kind": "dam_u"})
    (run_dir / "manifest.json").write_text(json.dumps({"stage": "search", "status": "completed"}))
    return run_dir, probs


def _opens_as_png(path):
    assert path.suffix == ".png"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


def test_importance_figures_exist_and_open_as_png(search_run, tmp_path):
    run_dir, _ = search_run
    written = write_importance_figures(run_dir, tmp_path / "fig")
    names = sorted(p.name for p in written)
    assert names == [
        "importance.json",
        "importance_by_distance.png",
        "importance_cls_sep.png",
        "importance_step_000000.png",
        "importance_step_000010.png",
        "importance_step_000030.png",
        "importance_step_000040.png",
    ]
    for path in written:
        if path.suffix == ".png":
            _opens_as_png(path)


def test_importance_numbers_match_the_trace(search_run, tmp_path):
    run_dir, probs = search_run
    write_importance_figures(run_dir, tmp_path / "fig")
    numbers = json.loads((tmp_path / "fig" / "importance.json").read_text())
    t = 2
    p = probs[t].mean(dim=(0, 1))  # [n, n]
    cells = [(i, j) for i in range(N) for j in range(N)]
    at_distance = [[p[i, j].item() for i, j in cells if abs(i - j) == d] for d in range(N)]
    expected_by_distance = [sum(values) / len(values) for values in at_distance]
    near = [p[i, j].item() for i, j in cells if 1 <= abs(i - j) <= 3]
    far = [p[i, j].item() for i, j in cells if abs(i - j) > 3]
    assert numbers["steps"] == [0, 10, 20, 30, 40]
    assert numbers["by_distance"][t] == pytest.approx(expected_by_distance)
    assert numbers["diagonal"][t] == pytest.approx(0.03)
    assert numbers["near_diagonal"][t] == pytest.approx(sum(near) / len(near))
    assert numbers["far"][t] == pytest.approx(sum(far) / len(far))
    assert numbers["cls_row"][t] == pytest.approx(p[0].mean().item())
    assert numbers["sep_column"][t] == pytest.approx(p[:, N - 1].mean().item())
    assert numbers["other"][t] == pytest.approx(p[1 : N - 1, 1 : N - 1].mean().item())
    assert numbers["mean_per_layer_head"][t][0][1] == pytest.approx(probs[t, 0, 1].mean().item())


def test_diagonal_ranks_first_when_it_is_the_least_kept_distance(search_run, tmp_path):
    run_dir, _ = search_run
    write_importance_figures(run_dir, tmp_path / "fig")
    numbers = json.loads((tmp_path / "fig" / "importance.json").read_text())
    assert numbers["diagonal_rank"] == [1] * T
    assert numbers["diagonal_rank_per_layer_head"] == [[[1] * H] * L] * T


def test_a_heads_diagonal_rank_is_read_in_that_heads_own_mask(search_run, tmp_path):
    """Head 1 keeps its diagonal above every other distance at the last snapshot: rank n there,
    while the mean over heads may rank it otherwise."""
    run_dir, probs = search_run
    probs[-1, 0, 1, range(N), range(N)] = 2.0  # above every σ of the random trace
    save_file({"probs": probs, "steps": torch.arange(T, dtype=torch.int64) * 10},
              run_dir / "artifacts" / "importance_trace.safetensors")  # fmt: skip
    write_importance_figures(run_dir, tmp_path / "fig")
    numbers = json.loads((tmp_path / "fig" / "importance.json").read_text())
    assert numbers["diagonal_rank_per_layer_head"][-1] == [[1, N]]
    assert numbers["diagonal_rank_per_layer_head"][-2] == [[1, 1]]


def test_a_diagonal_tied_with_every_distance_has_the_mean_rank():
    """Before a head warm-up ends every σ(α) is 0.5: no distance is the least kept."""
    from sparsebert_cli.reporting.importance import _diagonal_rank

    tied = torch.full((1, 64), 0.5)
    lowest = torch.cat([torch.tensor([[0.1]]), torch.full((1, 63), 0.5)], dim=1)
    two_way = torch.tensor([[0.2, 0.2, 0.5, 0.6]])
    assert _diagonal_rank(torch.cat([tied, lowest])).tolist() == [32.5, 1.0]
    assert _diagonal_rank(two_way).tolist() == [1.5]


def test_snapshots_are_spread_from_first_to_last():
    assert snapshot_indices(3) == [0, 1, 2]
    assert snapshot_indices(10) == [0, 3, 6, 9]


def test_run_without_trace_is_an_error_naming_the_file(tmp_path):
    with pytest.raises(SparseBertError, match="importance_trace.safetensors does not exist"):
        write_importance_figures(tmp_path, tmp_path / "fig")


def test_trace_of_the_wrong_shape_is_an_error(tmp_path):
    (tmp_path / "artifacts").mkdir()
    save_file(
        {"probs": torch.zeros(2, 4, 4), "steps": torch.zeros(2, dtype=torch.int64)},
        tmp_path / "artifacts" / "importance_trace.safetensors",
    )
    with pytest.raises(SparseBertError, match=r"not 'probs' \[T, L, H, n, n\]"):
        write_importance_figures(tmp_path, tmp_path / "fig")


def test_binarised_mask_of_a_run_is_drawn(search_run, tmp_path):
    run_dir, _ = search_run
    path = write_run_mask_figure(run_dir, tmp_path / "fig")
    assert path == tmp_path / "fig" / "mask_binarised.png"
    _opens_as_png(path)


def test_run_without_mask_artifact_has_no_mask_figure(tmp_path):
    assert write_run_mask_figure(tmp_path, tmp_path / "fig") is None


def test_pattern_grid_draws_every_pattern_with_its_sparsity(tmp_path):
    png, json_path = write_pattern_grid(16, tmp_path)
    _opens_as_png(png)
    numbers = json.loads(json_path.read_text())
    configs = presets(list(PATTERNS))
    expected = {name: sparsity(pattern_mask(cfg, 16, 1)[0]) for name, cfg in configs.items()}
    assert numbers == {"n": 16, "sparsity": pytest.approx(expected)}


def test_cli_figures_go_to_the_run_figures_folder(search_run, capsys):
    run_dir, _ = search_run
    assert main(["--figures", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "not completed" not in captured.err
    printed = captured.out.splitlines()
    assert str(run_dir.resolve() / "figures" / "importance.json") in printed
    assert str(run_dir.resolve() / "figures" / "mask_binarised.png") in printed


def test_cli_figures_of_a_running_search_say_they_show_it_so_far(search_run, capsys):
    run_dir, _ = search_run
    (run_dir / "manifest.json").write_text(json.dumps({"stage": "search", "status": "running"}))
    with runs.hold(run_dir):  # its job is alive
        assert main(["--figures", str(run_dir)]) == 0
    captured = capsys.readouterr()
    assert "is not completed (status: running)" in captured.err
    assert main(["--figures", str(run_dir)]) == 0  # killed: nobody holds its lock
    assert "is not completed (status: interrupted)" in capsys.readouterr().err
    assert str(run_dir.resolve() / "figures" / "mask_binarised.png") in captured.out.splitlines()


def test_cli_figures_of_a_stopped_search_draw_its_snapshots_so_far(search_run, capsys):
    """Stopped before it completed: no stacked trace and no mask yet, only the snapshots."""
    from sparsebert_cli.masks.trace import write_snapshot
    from sparsebert_cli.reporting.importance import load_trace

    run_dir, probs = search_run
    for path in (run_dir / "artifacts").iterdir():
        path.unlink()
    for step in (0, 10, 20):
        write_snapshot(run_dir / "trace", step, probs[step // 10])
    (run_dir / "manifest.json").write_text(json.dumps({"stage": "search", "status": "interrupted"}))
    assert main(["--figures", str(run_dir)]) == 0
    assert str(run_dir.resolve() / "figures" / "importance.json") in capsys.readouterr().out
    stacked, steps = load_trace(run_dir)
    assert torch.equal(stacked, probs[:3]) and steps.tolist() == [0, 10, 20]


@pytest.mark.parametrize("name", ["", "x" * 300], ids=["a-folder", "a-name-too-long"])
def test_cli_figures_of_a_folder_that_is_no_run_is_an_error(tmp_path, capsys, name):
    assert main(["--figures", str(tmp_path / name)]) == 1
    assert "is not a run folder" in capsys.readouterr().err


def _inside(box, outer) -> bool:
    return (
        box.x0 >= outer.x0 - 0.5
        and box.y0 >= outer.y0 - 0.5
        and box.x1 <= outer.x1 + 0.5
        and box.y1 <= outer.y1 + 0.5
    )


@pytest.mark.parametrize("heads", [2, 4, 12])
def test_mask_figure_title_clears_the_colour_bar_and_nothing_is_clipped(heads):
    from sparsebert_cli.masks.plots import mask_grid_figure

    mask = torch.rand(2, heads, 16, 16, generator=torch.Generator().manual_seed(heads)) > 0.5
    title = "binarised mask M of 20261129-151318-629752: dam_u, n=128, sparsity 72.6%"
    figure = mask_grid_figure(mask, title)
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    image_axes, colour_bar = figure.axes
    [title] = [t for t in figure.findobj(Text) if t.get_text().startswith("binarised mask")]
    boxes = {
        "title": title.get_window_extent(renderer),
        "image": image_axes.get_tightbbox(renderer),
        "colour bar": colour_bar.get_tightbbox(renderer),
    }
    assert not boxes["title"].overlaps(boxes["colour bar"])
    assert not boxes["title"].overlaps(boxes["image"])
    for name, box in boxes.items():
        assert _inside(box, figure.bbox), f"{name} is clipped at {heads} heads"


def test_cls_sep_map_is_drawn_on_the_range_of_its_values(search_run):
    from sparsebert_cli.reporting.importance import cls_sep_figure, importance_numbers

    _, probs = search_run
    flat = torch.full((N, N), 0.485)
    flat[0, 0] = 0.49
    numbers = importance_numbers(probs, torch.arange(T) * 10)
    image = cls_sep_figure(numbers, flat).axes[1].images[0]
    assert image.get_clim() == pytest.approx((0.485, 0.49))


def test_cli_figures_of_a_dense_model_say_there_is_nothing_to_draw(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "finetune" / "f1"
    (run_dir / "artifacts" / "model").mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"stage": "finetune", "status": "completed"}))
    assert main(["--figures", str(run_dir)]) == 0
    assert capsys.readouterr().out.startswith(f"nothing to draw: {run_dir.resolve()} holds a model")


def test_attention_through_training_reads_the_profiled_evaluations(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "pretrain" / "p1"
    (run_dir / "artifacts" / "model").mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"stage": "pretrain", "status": "completed"}))
    lines = [{"step": 50, "train/loss": 7.0}]  # a training line: not an evaluation
    for step, ratio in ((100, 1.1), (200, 8.0)):
        lines.append({"step": step, "eval/mlm_accuracy": ratio / 40, "eval/attn_neighbour_ratio":
                      ratio, "eval/attn_diag_mass": 0.01 * ratio, "eval/attn_cls_mass": 0.02,
                      "eval/attn_sep_mass": 0.3 / ratio})  # fmt: skip
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert main(["--figures", str(run_dir)]) == 0
    figures = run_dir.resolve() / "figures"
    assert str(figures / "attention_through_training.png") in capsys.readouterr().out
    _opens_as_png(figures / "attention_through_training.png")
    numbers = json.loads((figures / "attention_through_training.json").read_text())
    assert numbers["step"] == [100, 200]
    assert numbers["eval/attn_neighbour_ratio"] == [1.1, 8.0]
    assert numbers["eval/attn_sep_mass"] == pytest.approx([0.3 / 1.1, 0.3 / 8.0])


def test_a_mask_json_without_its_tensor_is_refused_before_any_figure(search_run, capsys):
    """The mask figure was left out without a word when mask.safetensors was missing."""
    run_dir, _ = search_run
    (run_dir / "artifacts" / "mask.safetensors").unlink()
    assert main(["--figures", str(run_dir)]) == 1
    assert "mask.safetensors does not exist" in capsys.readouterr().err
    assert not (run_dir / "figures").exists()


def test_a_damaged_metrics_log_is_refused_before_any_figure(search_run, capsys):
    """The importance and mask figures were written, then metrics.jsonl refused: half a set."""
    run_dir, _ = search_run
    (run_dir / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "eval/at\n')
    assert main(["--figures", str(run_dir)]) == 1
    assert "metrics.jsonl line 2 is not JSON" in capsys.readouterr().err
    assert not (run_dir / "figures").exists()


def test_a_last_line_cut_short_by_a_kill_is_left_out(tmp_path, capsys):
    """`report --figures` of a killed run (its figures "show what it had written so far")
    refused the log whose last append the kill cut off."""
    run_dir = tmp_path / "runs" / "pretrain" / "killed"
    run_dir.mkdir(parents=True)
    (run_dir / "manifest.json").write_text(json.dumps({"stage": "pretrain", "status": "running"}))
    profiled = {
        "step": 100,
        "eval/mlm_accuracy": 0.1,
        "eval/attn_neighbour_ratio": 2.0,
        "eval/attn_diag_mass": 0.1,
        "eval/attn_cls_mass": 0.2,
        "eval/attn_sep_mass": 0.3,
    }
    (run_dir / "metrics.jsonl").write_text(json.dumps(profiled) + '\n{"step": 200, "eval/at')
    assert main(["--figures", str(run_dir)]) == 0
    numbers = json.loads((run_dir / "figures" / "attention_through_training.json").read_text())
    assert numbers["step"] == [100]


def test_a_damaged_metrics_log_is_named_in_the_error(tmp_path):
    from sparsebert_cli.reporting.attention_curves import attention_history

    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2, "eval/attn\n')
    with pytest.raises(SparseBertError, match=r"metrics.jsonl line 2 is not JSON"):
        attention_history(tmp_path)


def test_an_output_folder_that_cannot_be_made_is_one_error_line(capsys):
    """`--out-dir` where no folder can be made (/proc) ended in a traceback."""
    assert main(["--patterns", "16", "--out-dir", "/proc/sparsebert-no-such/figures"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write /proc/sparsebert-no-such") and "--out-dir" in err
    assert len(err.strip().splitlines()) == 1


def test_a_run_file_that_cannot_be_read_is_named_as_read_not_write(search_run, monkeypatch, capsys):
    """Every OSError was reported as "cannot write … choose an --out-dir", a read failure too."""
    import sparsebert_cli.reporting.importance as importance

    run_dir, _ = search_run
    trace = runs.layout(run_dir).importance_trace

    def unreadable(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(trace))

    monkeypatch.setattr(importance, "write_importance_figures", unreadable)
    assert main(["--figures", str(run_dir)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot read {trace} (Permission denied)"), err
    assert "--out" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, refused",
    [
        (["--figures", "latest", "--out", "x.md"], "--out is not read by --figures"),
        (["--patterns", "16", "--examples", "5"], "--examples is not read by --patterns"),
        (["--patterns", "16", "--format", "md"], "--format is not read by --patterns"),
        (["runs", "--out-dir", "f"], "--out-dir is not read by the table"),
        (["runs", "--frontier", "--rows", "seed"], "--rows is not read by --frontier"),
        (["runs", "--max-distance", "4"], "--max-distance is not read by the table"),
    ],
)
def test_an_option_the_chosen_report_does_not_read_is_refused(argv, refused, capsys):
    """`--figures RUN --out x.md` wrote no file and said nothing."""
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2 and refused in capsys.readouterr().err
