"""Metric logging: `metrics.jsonl` in the run folder always, W&B when `logger=wandb`, and progress.

Progress is a rich bar (steps, loss, tokens/s, mask sparsity, ETA) when stdout is a terminal and
a plain line every `trainer.log_every` steps otherwise; while the bar is live, log records go
through rich's console above it (`progress.route_logging`). The bar keeps the last value of every
shown metric, so the final bar still shows the training loss beside the last evaluation; a plain
line shows the values of its own step only (an evaluation between two logged steps has no
training loss of its step). Only rank 0 logs.
"""

import json
import sys
from contextlib import ExitStack
from pathlib import Path

from sparsebert_cli import runs
from sparsebert_cli.errors import SparseBertError
from sparsebert_cli.progress import route_logging
from sparsebert_cli.runs import METRICS_LOG, atomic_write_text, redact, sweep_of

# The metrics a progress line shows (every metric goes to metrics.jsonl and W&B).
SHOWN = (
    "train/loss",
    "train/lr",
    "train/tokens_per_s",
    runs.MASK_SPARSITY,
    runs.MLM_LOSS,  # pre-training and search (training/evaluation.py)
    runs.HEADLINE,  # fine-tuning
)


class MetricLogger:
    def __init__(
        self,
        run_dir: Path,
        logger_cfg,
        resolved_config: dict,
        total_steps: int,
        enabled: bool = True,
        wandb_id: str | None = None,
    ):
        """`wandb_id`: the W&B run of the checkpoint a resumed run starts from (it continues
        that run: W&B keeps the steps it already has and drops the repeated ones); None starts a
        new W&B run (a fresh start, resume=never), whose id `wandb_id` then holds."""
        self.path = run_dir / METRICS_LOG
        self.wandb_id = wandb_id
        self.enabled = enabled
        self.total = total_steps
        self.wandb = None
        self.progress = None
        self._task = None
        self._shown: dict[str, tuple[int, float]] = {}  # metric -> (step, value)
        self._printed: tuple[int, str] | None = None  # the last progress line printed
        self._routing = ExitStack()
        if not enabled:
            return
        if logger_cfg.name == "wandb":
            import wandb

            group = logger_cfg.group or sweep_of(run_dir)
            try:
                self.wandb = wandb.init(
                    id=wandb_id,
                    resume="allow" if wandb_id else None,
                    project=logger_cfg.project,
                    entity=logger_cfg.entity,
                    mode=logger_cfg.mode,
                    group=group,
                    tags=list(logger_cfg.tags),
                    name=f"{resolved_config['stage']}-{run_dir.name}",
                    dir=str(run_dir),
                    config=redact(resolved_config),
                    reinit="finish_previous",
                )
            except wandb.errors.Error as error:  # no API key, the server unreachable, ...
                reason = (str(error).strip() or type(error).__name__).splitlines()[0]
                raise SparseBertError(
                    f"logger=wandb logger.mode={logger_cfg.mode} could not start a W&B run "
                    f"({reason}); for online logging run `wandb login` or set WANDB_API_KEY, or "
                    "use logger.mode=offline (`wandb sync` uploads the run later)."
                ) from None
            self.wandb_id = self.wandb.id
        if sys.stdout.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TextColumn("{task.fields[info]}"),
                TimeRemainingColumn(),
            )
            self._routing.enter_context(route_logging())
            self.progress.start()
            self._task = self.progress.add_task(
                resolved_config["stage"], total=total_steps, info=""
            )

    def truncate_after(self, step: int) -> None:
        """On resume: drop lines logged after the checkpoint we restart from.

        A line cut short by a kill (the last one) is dropped too; the file is replaced atomically.
        """
        if not self.enabled or not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and record.get("step", 0) <= step:
                kept.append(line)
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: dict[str, float], show: bool = True) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
        if self.wandb is not None:
            self.wandb.log(metrics, step=step)
        if not show:
            return
        self._shown.update((k, (step, v)) for k, v in metrics.items() if k in SHOWN)
        if self.progress is not None:  # the live bar: the last value of each
            self.progress.update(self._task, completed=step, info=self._info(0))
            return
        info = self._info(step)  # a printed line: the values of its own step only
        if (step, info) != self._printed:  # evaluation metrics alone change no shown value
            print(f"step {step}/{self.total}  {info}", flush=True)
            self._printed = (step, info)

    def _info(self, since: int) -> str:
        """The shown metrics logged at step `since` or later, as `loss=11.37  lr=0.001`."""
        return "  ".join(
            f"{k.split('/')[-1]}={self._shown[k][1]:.4g}"
            for k in SHOWN
            if k in self._shown and self._shown[k][0] >= since
        )

    def advance(self, step: int) -> None:
        if self.progress is not None:
            self.progress.update(self._task, completed=step)

    def finish(self, summary: dict[str, float], exit_code: int = 0) -> None:
        """Stop the progress bar and end the W&B run with the job's `exit_code`: ≠ 0 (an
        error; 130, 143 or 129 when stopped) marks it failed there."""
        if not self.enabled:
            return
        if self.progress is not None:
            self.progress.stop()
            self._routing.close()
            self.progress = None
        if self.wandb is not None:
            self.wandb.summary.update(summary)
            self.wandb.finish(exit_code=exit_code)
            self.wandb = None
