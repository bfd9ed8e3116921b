"""Shared pieces of the robustness suite: a tiny configuration, a killable CLI job, checks."""

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import torch
from safetensors.torch import load_file

from sparsebert_cli.runs import CHECKPOINT_FILES

# A model and batch small enough that one optimiser step takes well under a second on one core.
TINY = [
    "debug=smoke",
    "model.hidden_size=32",
    "model.intermediate_size=64",
    "data.seq_len=32",
    "trainer.batch_size=4",
    "trainer.eval_batch_size=32",
    "trainer.num_threads=1",
]
# A search: its DAM learns the mask at the data's length (a fixed mask does not read mask.seq_len).
TINY_SEARCH = [*TINY, "mask.seq_len=32"]
# The loss scale a checkpoint saves beside the optimiser: fp32's (disabled) one.
NO_SCALER = torch.amp.GradScaler(enabled=False)
# The same for the stages that fine-tune (a stage refuses keys it does not read: task.* in
# pretrain, data.seq_len in finetune).
TINY_TASK = [*(a for a in TINY if not a.startswith("data.")), "task.seq_len=32"]


def stable(metrics: dict) -> dict:
    """Metrics without the throughput figures (the only wall-clock-dependent keys)."""
    return {k: v for k, v in metrics.items() if not k.endswith("per_s")}


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def losses(run_dir: Path) -> list[tuple]:
    """(step, train/loss, train/lr) of every line of metrics.jsonl that has a loss."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/loss"], r["train/lr"]) for r in rows if "train/loss" in r]


def assert_same_weights(a: Path, b: Path) -> None:
    left, right = load_file(str(a)), load_file(str(b))
    assert left.keys() == right.keys()
    for key in left:
        assert torch.equal(left[key], right[key]), key


def assert_checkpoints_whole(ckpt_dir: Path) -> list[str]:
    """Every visible step-* folder holds all its files and loads; returns their names."""
    names = []
    for folder in sorted(ckpt_dir.glob("step-*")) if ckpt_dir.exists() else []:
        assert sorted(p.name for p in folder.iterdir()) == sorted(CHECKPOINT_FILES), folder
        load_file(str(folder / "model.safetensors"))  # a truncated file would raise here
        torch.load(folder / "training_state.pt", weights_only=True)
        assert json.loads((folder / "loop_state.json").read_text())["step"] == int(
            folder.name.split("-")[1]
        )
        names.append(folder.name)
    return names


def assert_clean_error(proc, *needles: str) -> str:
    """Non-zero exit, no traceback, and an `error:` paragraph naming every needle."""
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "Traceback" not in out, out
    for needle in needles:
        assert needle in out, (needle, out)
    return out


class Job:
    """The real CLI in a subprocess whose output is read line by line, to be SIGKILLed at will."""

    def __init__(self, *args: str, cwd: Path, env: dict | None = None, preexec_fn=None):
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self.proc = subprocess.Popen(
            self.command(*args),
            cwd=cwd,
            env=self.environment(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            preexec_fn=preexec_fn,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @staticmethod
    def command(*args: str) -> list[str]:
        return [sys.executable, "-m", "sparsebert_cli.cli", *args]

    @staticmethod
    def environment(env: dict | None = None) -> dict:
        return {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}

    def _read(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append(None)  # end of output
            self._cond.notify_all()

    def wait_for(self, text: str, timeout: float = 600) -> bool:
        """Block until a line contains `text` (True) or the process ends without one (False)."""
        with self._cond:
            seen = 0
            while True:
                for line in self.lines[seen:]:
                    if line is None:
                        return False
                    if text in line:
                        return True
                seen = len(self.lines)
                if not self._cond.wait(timeout):
                    raise TimeoutError(f"no line with {text!r} within {timeout}s")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._reader.join()

    def finish(self, timeout: float = 600) -> int:
        code = self.proc.wait(timeout)
        self._reader.join()
        return code

    @property
    def output(self) -> str:
        return "".join(line for line in self.lines if line is not None)


def poll_until(predicate, proc: subprocess.Popen) -> bool:
    """Spin (no sleeping: the windows are milliseconds) until predicate() or the process exits."""
    while not predicate():
        if proc.poll() is not None:
            return predicate()
        os.sched_yield()
    return True
