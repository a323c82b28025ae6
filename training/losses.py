"""Loss functions of teacher and student training (docs/models.md; the authors' reference code).

All losses are computed in float32 whatever autocast precision produced their inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["distillation_kl", "idr_distillation", "moco_info_nce"]


def moco_info_nce(queries: torch.Tensor, keys: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over every ordered pair ``(i, j), i ≠ j`` of ``D`` positive crops, with a queue of negatives.

    For crop ``i``'s query ``q_i`` and crop ``j``'s key ``k_j`` (same image, same
    degradation) the logits are ``[q_i·k_j, q_i·queue] / τ`` with target 0; the cross
    entropy is averaged over the batch and then over the ``D(D−1)`` pairs (LightBSR's
    Eq. 1–2, the reference ``MoCo.forward``). Written in closed form: for one pair the
    loss is ``logaddexp(a, LSE(n)) − a`` with ``a = q_i·k_j/τ`` and ``n = q_i·queue/τ``.

    Args:
        queries, keys: ``(D, B, C)`` L2-normalised projections (keys without gradient).
        queue: ``(C, K)`` negatives.
        temperature: τ (0.07).
    """
    d = queries.shape[0]
    if d < 2:
        raise ValueError("the contrastive loss needs at least 2 positive crops per image")
    q, k, negatives = queries.float(), keys.float(), queue.float()
    positive = torch.einsum("ibc,jbc->ijb", q, k) / temperature  # (D, D, B)
    negative = torch.logsumexp(torch.einsum("ibc,ck->ibk", q, negatives) / temperature, dim=2)  # (D, B)
    loss = torch.logaddexp(positive, negative[:, None, :]) - positive
    off_diagonal = ~torch.eye(d, dtype=torch.bool, device=loss.device)
    return loss[off_diagonal].mean()


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(teacher/τ) ‖ softmax(student/τ))`` over the feature dimension, batch-mean reduction."""
    return F.kl_div(
        F.log_softmax(student.float() / temperature, dim=1),
        F.softmax(teacher.detach().float() / temperature, dim=1),
        reduction="batchmean",
    )


def idr_distillation(
    student: tuple[torch.Tensor, torch.Tensor],
    teacher: tuple[torch.Tensor, torch.Tensor],
    temperature: float = 0.15,
    channel_l1_weight: float = 0.1,
) -> dict[str, torch.Tensor]:
    """LightBSR's ``L_DL = MSE(s0ˢ, s0ᵀ) + KL(c0ᵀ ‖ c0ˢ; τ) + β·L1(c0ˢ, c0ᵀ)``, term by term.

    ``student`` and ``teacher`` are ``(channel IDR (B, 48), spatial IDR (B, 8, H, W))``.
    Returns ``{"kd": total, "kd_spatial_mse": …, "kd_channel_kl": …, "kd_channel_l1": …}``.
    """
    (c_s, s_s), (c_t, s_t) = student, teacher
    mse = F.mse_loss(s_s.float(), s_t.detach().float())
    kl = distillation_kl(c_s, c_t, temperature)
    l1 = F.l1_loss(c_s.float(), c_t.detach().float())
    return {
        "kd": mse + kl + channel_l1_weight * l1,
        "kd_spatial_mse": mse.detach(),
        "kd_channel_kl": kl.detach(),
        "kd_channel_l1": l1.detach(),
    }
