"""Knowledge-distillation pieces: soft-logit loss with temperature, and the hidden-state projector."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def logit_kd_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Hinton et al.: KL(teacher || student) on softened distributions, scaled by T^2 so its gradient
    magnitude does not shrink as T grows."""
    t = temperature
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=-1),
        F.log_softmax(teacher_logits / t, dim=-1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """The student's objective: (1 - alpha) x cross-entropy on the labels + alpha x :func:`logit_kd_loss`."""
    hard = F.cross_entropy(student_logits, targets, label_smoothing=label_smoothing)
    return (1 - alpha) * hard + alpha * logit_kd_loss(student_logits, teacher_logits, temperature)


class HiddenProjector(torch.nn.Module):
    """Maps the student's pooled hidden state to the teacher's width for an MSE loss; training only,
    never part of the exported model."""

    def __init__(self, d_student: int, d_teacher: int) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(d_student, d_teacher)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h)
