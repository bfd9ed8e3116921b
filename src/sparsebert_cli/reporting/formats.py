"""Render a results `Table` as a rich terminal table, Markdown, CSV, LaTeX or JSON.

A cell reads `81.9/81.9 ± 0.3/0.2 (n=3)`: the mean of each headline number over the completed
seeds, their sample standard deviations (shown from two seeds on) and the seed count; a cell with
failed, interrupted or running jobs says how many, one with no completed job reads `failed`,
`interrupted`, `running` or `missing`, and one whose runs are not replicates of one config reads
`mixed configs` or `duplicate seeds` (not pooled). Every format carries the table's warnings:
the terminal table and Markdown below the table, LaTeX as `%` comments, JSON in `warnings`, CSV
in the cell's status column (`mixed`), the full text on stderr from the CLI. When the results
descend from pre-training runs of this tool, columns after the sparsity give those runs'
held-out MLM loss and accuracy (mean ± std over the distinct pre-trainings) and how many passed
the "uses attention" gate: a verdict about attention rests on a model that has learned to use
it. Pre-training results (pretrain runs, no task columns) are summed up like a cell in the MLM
loss column: failed, interrupted, mixed.
"""

import csv
import dataclasses
import io
import json

from sparsebert_cli.reporting.table import MASK_IDENTITY, Cell, Column, Row, Stat, Table

FORMATS = ("table", "md", "csv", "latex", "json")
SUFFIXES = {".md": "md", ".csv": "csv", ".tex": "latex", ".json": "json"}  # --out FILE's format
MLM_CSV = ("mlm_loss mean", "mlm_loss std", "mlm_accuracy mean", "mlm_accuracy std",
           "gate passed", "gate measured", "pretraining status")  # fmt: skip
NOTE = (
    "Cells: mean ± sample std over seeds (n = completed seeds and folds), metrics ×100, "
    "sparsity in %. "
    "Avg: mean over the columns, MNLI m and mm counted separately, the mean of acc/F1 (QQP, "
    "MRPC) and of Pearson/Spearman (STS-B) counted once."
)
DELTA_HEADER = "MLM loss − dense (same seed)"
DELTA_NOTE = (
    " MLM loss − dense: each pre-training's held-out loss minus the dense row's of the same seed"
    " (the seed fixes the batches; every seed holds out the same documents), the same data, model"
    " and training, and the same checkpoint it continues, mean ± std over the seeds."
)
MLM_NOTE = (
    " MLM loss / acc.: held-out masked-LM loss (not ×100) and accuracy (%) of the pre-trainings"
    ' (each counted once); gate: how many of them pass the "uses attention" gate (a head with'
    " ≥ 3× the uniform mass on a neighbour and ≥ 20 % MLM accuracy) of those that measured it."
)


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def cell_text(cell: Cell) -> str:
    """The text of one cell (see the module docstring)."""
    if cell.problem:
        return f"{cell.problem.split(':', 1)[0]} (n={cell.completed})"
    if cell.completed == 0:  # `failed (2), 1 interrupted`; `missing` without any run
        counts = cell.unfinished()
        if not counts:
            return cell.status
        (status, count), rest = counts[0], counts[1:]
        return (status if count <= 1 else f"{status} ({count})") + "".join(
            f", {n} {other}" for other, n in rest
        )
    stats = list(cell.values.values())
    text = "/".join(_number(s.mean) for s in stats)
    if all(s.std is not None for s in stats):
        text += " ± " + "/".join(_number(s.std) for s in stats)
    return text + f" (n={cell.completed})" + _unfinished_text(cell)


def _unfinished_text(cell: Cell) -> str:
    """`, 1 failed, 2 interrupted`: the runs of a cell that did not complete."""
    return "".join(f", {count} {status}" for status, count in cell.unfinished())


def column_header(column: Column) -> str:
    labels = [label for label, _ in column.metrics]
    return f"{column.label} {'/'.join(labels)}" if len(labels) > 1 else column.label


def _first_header(table: Table) -> str:
    return "mask" if table.row_keys == list(MASK_IDENTITY) else ", ".join(table.row_keys)


def _has_mlm(table: Table) -> bool:
    return any(row.mlm_loss.n or row.pretraining for row in table.rows)


def note(table: Table) -> str:
    """The legend under the table (the MLM loss sentence only where that column is shown)."""
    tasks = NOTE if table.columns else "Pre-training results: no task columns."
    return tasks + (MLM_NOTE if _has_mlm(table) else "") + (DELTA_NOTE if _has_delta(table) else "")


def mlm_text(stat: Stat, scale: float = 1.0, digits: int = 3) -> str:
    """`6.12 ± 0.05 (n=2)`: a held-out MLM number of a row's pre-trainings (×`scale`)."""
    if stat.mean is None:
        return "n/a"
    text = f"{scale * stat.mean:.{digits}f}"
    if stat.std is not None:
        text += f" ± {scale * stat.std:.{digits}f}"
    return text + f" (n={stat.n})"


def gate_text(gate: tuple[int, int]) -> str:
    passed, measured = gate
    return f"{passed}/{measured} pass" if measured else "n/a"


def _mlm_texts(row: Row) -> list[str]:
    """MLM loss, accuracy and gate of a row. Its own pre-training results (pretrain runs, the
    rows of a report without task results) read like a cell in the loss column when they are
    not pooled or none completed (`mixed configs (n=2)`, `failed`); otherwise their runs that did
    not complete are counted beside the number."""
    own = row.pretraining
    if own is not None and (own.problem or not own.completed):
        return [cell_text(own), "n/a", "n/a"]
    loss = mlm_text(row.mlm_loss) + (_unfinished_text(own) if own else "")
    return [loss, mlm_text(row.mlm_accuracy, 100, 1), gate_text(row.gate)]


def _has_delta(table: Table) -> bool:
    return any(row.mlm_delta.n for row in table.rows)


def _grid(table: Table) -> list[list[str]]:
    """Header and rows as text: label, sparsity, [MLM loss, accuracy, gate, [Δ loss vs dense,]]
    one cell per column, average (no average without task columns)."""
    mlm, delta, tasks = _has_mlm(table), _has_delta(table), bool(table.columns)
    header = [
        _first_header(table),
        "sparsity %",
        *(["MLM loss", "MLM acc. %", "gate"] if mlm else []),
        *([DELTA_HEADER] if delta else []),
        *map(column_header, table.columns),
        *(["Avg"] if tasks else []),
    ]
    body = []
    for row in table.rows:
        line = [row.label, _number(row.sparsity)]
        if mlm:
            line += _mlm_texts(row)
        if delta:
            line.append(mlm_text(row.mlm_delta, digits=4))
        line += map(cell_text, row.cells)
        body.append(line + ([_number(row.average)] if tasks else []))
    return [header, *body]


def failures(table: Table) -> list[str]:
    """`<run folder>: <first line of its error>` of every failed run in the table."""
    return [error for row in table.rows for cell in row.all_cells() for error in cell.errors]


def to_markdown(table: Table) -> str:
    header, *body = _grid(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines += ["", note(table)]
    if table.warnings:
        lines += ["", "Warnings:", *(f"- **{warning}**" for warning in table.warnings)]
    failed = failures(table)
    if failed:
        lines += ["", "Failed runs:", *(f"- {line}" for line in failed)]
    return "\n".join(lines) + "\n"


def to_csv(table: Table) -> str:
    """One line per row: its keys, sparsity, each number's mean and std, n and status per column."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    mlm = _has_mlm(table)
    header = [
        "row",
        *table.row_keys,
        "sparsity",
        *(MLM_CSV if mlm else []),
        *(["mlm_loss_minus_dense mean", "mlm_loss_minus_dense std"] if _has_delta(table) else []),
    ]
    for column in table.columns:
        for label, _ in column.metrics:
            name = f"{column.label} {label}".strip()
            header += [f"{name} mean", f"{name} std"]
        header += [f"{column.label} n", f"{column.label} status"]
    writer.writerow([*header, "average"])
    for row in table.rows:
        line = [row.label, *(row.key.get(k, "") for k in table.row_keys), _csv(row.sparsity)]
        if mlm:
            line += [_csv(row.mlm_loss.mean), _csv(row.mlm_loss.std)]
            accuracy = row.mlm_accuracy  # ×100 like the table and the task columns beside it
            line += [_csv(_percent(accuracy.mean)), _csv(_percent(accuracy.std)), *row.gate]
            line.append(row.pretraining.status if row.pretraining else "")
        if _has_delta(table):
            line += [_csv(row.mlm_delta.mean), _csv(row.mlm_delta.std)]
        for cell in row.cells:
            for stat in cell.values.values():
                line += [_csv(stat.mean), _csv(stat.std)]
            line += [cell.completed, cell.status]
        writer.writerow([*line, _csv(row.average)])
    return out.getvalue()


def _percent(fraction: float | None) -> float | None:
    return None if fraction is None else 100 * fraction


def _csv(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


_LATEX_ESCAPES = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    # the symbols the table's labels and headers use (pdflatex refuses them as Unicode)
    "±": r"$\pm$",
    "−": r"$-$",
    "×": r"$\times$",
    "≥": r"$\geq$",
    "≤": r"$\leq$",
    "λ": r"$\lambda$",
    "τ": r"$\tau$",
    "α": r"$\alpha$",
    "σ": r"$\sigma$",
    "θ": r"$\theta$",
}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPES.get(char, char) for char in text)


def to_latex(table: Table) -> str:
    header, *body = _grid(table)
    lines = [
        r"\begin{tabular}{l" + "r" * (len(header) - 1) + "}",
        r"\hline",
        " & ".join(map(latex_escape, header)) + r" \\",
        r"\hline",
        *(" & ".join(map(latex_escape, row)) + r" \\" for row in body),
        r"\hline",
        r"\end{tabular}",
        *(f"% warning: {warning}" for warning in table.warnings),
    ]
    return "\n".join(lines) + "\n"


def to_json(table: Table) -> str:
    data = dataclasses.asdict(table)
    for row in data["rows"]:  # ×100 like the task cells beside it and the other formats
        accuracy = row["mlm_accuracy"]
        accuracy.update(mean=_percent(accuracy["mean"]), std=_percent(accuracy["std"]))
    return json.dumps({**data, "note": note(table)}, indent=2, default=str) + "\n"


def to_rich(table: Table):
    """A rich Table (failed cells red, partial ones yellow) for the terminal."""
    from rich.table import Table as RichTable
    from rich.text import Text

    header, *body = _grid(table)
    rich_table = RichTable(title="SparseBERT results")
    for i, name in enumerate(header):
        rich_table.add_column(name, justify="left" if i == 0 else "right")
    styles = {
        "failed": "red",
        "partial": "yellow",
        "interrupted": "yellow",
        "running": "yellow",
        "missing": "dim",
        "mixed": "bold red",
    }
    first_cell = len(header) - len(table.columns) - 1
    for row, texts in zip(table.rows, body, strict=True):
        cells = [
            Text(t, style=styles.get(c.status, ""))
            for c, t in zip(row.cells, texts[first_cell:-1], strict=True)
        ]
        rich_table.add_row(Text(texts[0]), *texts[1:first_cell], *cells, texts[-1])
    return rich_table


def to_text(table: Table) -> str:
    """The terminal table as plain text (for `--format table --out FILE`)."""
    from rich.console import Console

    console = Console(record=True, width=200, file=io.StringIO())
    console.print(to_rich(table))
    warnings = "".join(f"warning: {warning}\n" for warning in table.warnings)
    failed = "".join(f"failed: {error}\n" for error in failures(table))
    return console.export_text() + note(table) + "\n" + failed + warnings


RENDERERS = {"table": to_text, "md": to_markdown, "csv": to_csv, "latex": to_latex, "json": to_json}
