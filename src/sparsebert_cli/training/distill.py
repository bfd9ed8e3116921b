"""mask.objective=distill: the searched model keeps the frozen dense model's final hidden states.

The loss is the mean squared error between the masked model's and the dense model's last hidden
states over real (non-padding) tokens. The dense model (the teacher) is a frozen copy of the model
the search starts from; it is held outside the module tree, so it is neither trained nor written
into checkpoints.
"""

import torch
from torch import nn

from sparsebert_cli.training.evaluation import held_out_batches


class DistillationObjective(nn.Module):
    """The loop's model for a distillation search: forward(**batch) → {"loss": MSE}."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__()
        self.student = student
        self._teacher = (teacher.eval().requires_grad_(False),)

    def _states(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return model.bert(  # with the model's mask (MaskedEncoder)
            batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).last_hidden_state

    def mse(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(summed squared error per token over real tokens, number of real tokens)."""
        teacher, device = self._teacher[0], batch["input_ids"].device
        if next(teacher.parameters()).device != device:  # hidden from the loop's model.to()
            teacher.to(device)
        with torch.no_grad():
            target = self._states(teacher, batch)
        error = (self._states(self.student, batch) - target).pow(2).mean(-1)
        real = batch["attention_mask"].bool()
        return error[real].sum(), real.sum()

    def forward(self, **batch: torch.Tensor) -> dict[str, torch.Tensor]:
        total, count = self.mse(batch)
        return {"loss": total / count.clamp(min=1)}

    @torch.no_grad()
    def evaluate(self, dataset, collate, batch_size: int) -> dict[str, float]:
        """Held-out distillation fidelity: the mean squared error per real token."""
        total = count = 0.0
        for batch in held_out_batches(
            self.student, dataset, collate, batch_size, "distillation fidelity"
        ):
            error, tokens = self.mse(batch)
            total, count = total + float(error), count + float(tokens)
        return {"eval/distill_mse": total / max(count, 1.0)}
