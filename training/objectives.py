"""What is trained: one module per (family, role) that turns a degraded batch into losses.

An objective wraps the network being trained (``objective.model``, the one saved in
checkpoints) and, for students, the frozen teacher. Its ``forward(lr, hr, kernels,
noise, stage)`` returns a dict of scalar losses whose ``"loss"`` entry is the total to
back-propagate (the others are detached, for logging); wrapping the whole objective in
``DistributedDataParallel`` keeps every forward pass inside the DDP wrapper.

Stages (docs/models.md, the authors' trainers):

* LightBSR teacher — stage 1: estimator + projector, MoCo contrastive loss over ``D``
  crops; stage 2: everything, ``L1(SR, HR)`` on 0–255 values + contrastive loss.
* LightBSR student — stage 1: estimator + converter, ``L_DL`` (MSE on the spatial IDR,
  KL(τ = 0.15) + 0.1·L1 on the channel IDR); stage 2: everything, L1 + ``L_DL``.
* KDSR teacher — one stage: estimator (seeing ``pixel_unshuffle(HR)``) and SR network
  jointly, L1 on 0–1 values as the KDSR code (the paper trains its teacher "jointly with
  the SR network" and has no contrastive or pre-training step).
* KDSR student — stage 1: estimator (up to the 256-d feature ``d``), KL(τ = 0.15) on ``d``
  (+ an optional L1, off by default as in the KDSR code); stage 2: everything, L1 + KD.

Batch tensors: ``lr`` ``(B, D, 3, h, w)`` and ``hr`` ``(B, D, 3, H, W)`` in [0, 1],
``kernels`` ``(B, 21, 21)``, ``noise`` ``(B,)`` in 0–255 units or ``None``.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lightbsr.errors import CheckpointError
from lightbsr.models import KDSR, KDSRTeacher, LightBSR, LightBSRTeacher

from .losses import distillation_kl, idr_distillation, moco_info_nce

__all__ = [
    "KDSRStudentObjective",
    "KDSRTeacherObjective",
    "LightBSRStudentObjective",
    "LightBSRTeacherObjective",
    "Objective",
    "init_student_from_teacher",
]

MOCO_TEMPERATURE = 0.07
MOCO_MOMENTUM = 0.999
KD_TEMPERATURE = 0.15

Losses = dict[str, torch.Tensor]


class Objective(nn.Module):
    """Base class: the trained ``model``, which of its parameters each stage trains, and inference."""

    model: nn.Module
    #: positive crops per image the loss needs
    crops: int = 1
    #: the SR L1 loss is computed on values × this (LightBSR: 0–255; KDSR: 0–1)
    l1_scale: float = 255.0
    #: prefixes of the model's parameters trained in stage 1 (empty: no stage 1)
    stage1_prefixes: tuple[str, ...] = ()
    stage1_excluded: tuple[str, ...] = ()

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        #: names of the parameters the optimizer holds: the trainable ones at construction
        self.trainable = [name for name, p in model.named_parameters() if p.requires_grad]

    def stage_parameters(self, stage: int) -> set[str]:
        """Names of the model parameters trained in ``stage`` (1 or 2)."""
        if stage == 2:
            return set(self.trainable)
        return {
            name
            for name in self.trainable
            if name.startswith(self.stage1_prefixes) and not name.startswith(self.stage1_excluded)
        }

    def set_stage(self, stage: int) -> None:
        """Let only ``stage``'s parameters require gradients."""
        chosen = self.stage_parameters(stage)
        for name, p in self.model.named_parameters():
            if name in self.trainable:
                p.requires_grad_(name in chosen)

    def sr_l1(self, sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(sr.float(), hr) * self.l1_scale

    def predict(
        self, lr: torch.Tensor, hr: torch.Tensor, kernels: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:  # pragma: no cover - abstract
        """SR of ``lr`` (B, 3, h, w) for validation; teachers also use the true degradation / HR."""
        raise NotImplementedError


# --------------------------------------------------------------------------- LightBSR


class LightBSRTeacherObjective(Objective):
    """Contrastive pre-training of the DRP-conditioned estimator, then L1 + contrastive (MoCo, D crops)."""

    stage1_prefixes = ("estimator.", "projector.")
    model: LightBSRTeacher

    def __init__(
        self,
        model: LightBSRTeacher,
        crops: int = 4,
        temperature: float = MOCO_TEMPERATURE,
        momentum: float = MOCO_MOMENTUM,
    ) -> None:
        super().__init__(model)
        if crops < 2:
            raise ValueError("the LightBSR teacher's contrastive loss needs at least 2 crops per image")
        self.crops = crops
        self.temperature = temperature
        self.momentum = momentum

    @torch.no_grad()
    def init_key_encoder(self) -> None:
        """Start the momentum (key) encoder as a copy of the query encoder's parameters (MoCo)."""
        m = self.model
        for query, key in ((m.estimator, m.key_estimator), (m.projector, m.key_projector)):
            for q, k in zip(query.parameters(), key.parameters(), strict=True):
                k.copy_(q)

    @torch.no_grad()
    def _momentum_update(self) -> None:
        m = self.model
        queries: list[torch.Tensor] = [*m.estimator.parameters(), *m.projector.parameters()]
        keys: list[torch.Tensor] = [*m.key_estimator.parameters(), *m.key_projector.parameters()]
        torch._foreach_mul_(keys, self.momentum)
        torch._foreach_add_(keys, queries, alpha=1.0 - self.momentum)

    @torch.no_grad()
    def _enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest queue entries by ``keys`` (gathered from every rank under DDP)."""
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered = [torch.empty_like(keys) for _ in range(dist.get_world_size())]
            dist.all_gather(gathered, keys.contiguous())
            keys = torch.cat(gathered)
        queue, pointer = cast(torch.Tensor, self.model.queue), cast(torch.Tensor, self.model.queue_ptr)
        size = queue.shape[1]
        index = (pointer + torch.arange(keys.shape[0], device=keys.device)) % size
        queue.index_copy_(1, index, keys.t().to(queue.dtype))
        pointer.copy_((pointer + keys.shape[0]) % size)

    def forward(
        self, lr: torch.Tensor, hr: torch.Tensor, kernels: torch.Tensor, noise: torch.Tensor | None, stage: int
    ) -> Losses:
        m = self.model
        drp = m.drp(kernels, noise)
        inputs = [m.estimator_input(lr[:, i], drp) for i in range(lr.shape[1])]
        features = [m.estimator(x) for x in inputs]
        queries = torch.stack([F.normalize(m.projector(f).float(), dim=1) for f in features])
        with torch.no_grad():
            self._momentum_update()
            keys = torch.stack([F.normalize(m.key_projector(m.key_estimator(x)).float(), dim=1) for x in inputs])
        contrast = moco_info_nce(queries, keys, cast(torch.Tensor, m.queue).clone(), self.temperature)
        self._enqueue(keys[0])
        if stage == 1:
            return {"loss": contrast, "contrast": contrast.detach()}
        sr = m.restore(lr[:, 0], m.converter(features[0], lr.shape[3], lr.shape[4]))
        l1 = self.sr_l1(sr, hr[:, 0])
        return {"loss": l1 + contrast, "l1": l1.detach(), "contrast": contrast.detach()}

    def predict(
        self, lr: torch.Tensor, hr: torch.Tensor, kernels: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        return self.model(lr, self.model.drp(kernels, noise))


class _Distillation(Objective):
    """A student objective: the frozen teacher rides along and stays in eval mode."""

    def __init__(self, student: nn.Module, teacher: nn.Module) -> None:
        super().__init__(student)
        self.teacher = teacher.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> _Distillation:
        super().train(mode)
        self.teacher.eval()
        return self

    def predict(
        self, lr: torch.Tensor, hr: torch.Tensor, kernels: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        return self.model(lr)


class LightBSRStudentObjective(_Distillation):
    """Distil the teacher's channel/spatial IDRs into the LR-only student, then L1 + distillation."""

    stage1_prefixes = ("estimator.", "converter.")
    model: LightBSR
    teacher: LightBSRTeacher

    def __init__(
        self,
        student: LightBSR,
        teacher: LightBSRTeacher,
        temperature: float = KD_TEMPERATURE,
        channel_l1_weight: float = 0.1,
    ) -> None:
        super().__init__(student, teacher)
        self.temperature = temperature
        self.channel_l1_weight = channel_l1_weight

    def forward(
        self, lr: torch.Tensor, hr: torch.Tensor, kernels: torch.Tensor, noise: torch.Tensor | None, stage: int
    ) -> Losses:
        lr0 = lr[:, 0]
        with torch.no_grad():
            teacher_idr = self.teacher.estimate(lr0, self.teacher.drp(kernels, noise))
        idr = self.model.estimate(lr0)
        kd = idr_distillation(idr, teacher_idr, self.temperature, self.channel_l1_weight)
        total = kd.pop("kd")
        if stage == 1:
            return {"loss": total, "kd": total.detach(), **kd}
        l1 = self.sr_l1(self.model.restore(lr0, idr), hr[:, 0])
        return {"loss": l1 + total, "l1": l1.detach(), "kd": total.detach(), **kd}


# --------------------------------------------------------------------------- KDSR


class KDSRTeacherObjective(Objective):
    """KDSR teacher: estimator on ``cat(LR, pixel_unshuffle(HR))`` and SR network trained jointly with L1."""

    l1_scale = 1.0
    model: KDSRTeacher

    def forward(
        self, lr: torch.Tensor, hr: torch.Tensor, kernels: torch.Tensor, noise: torch.Tensor | None, stage: int
    ) -> Losses:
        sr = self.model(lr[:, 0], hr[:, 0])
        l1 = self.sr_l1(sr, hr[:, 0])
        return {"loss": l1, "l1": l1.detach()}

    def predict(
        self, lr: torch.Tensor, hr: torch.Tensor, kernels: torch.Tensor, noise: torch.Tensor | None
    ) -> torch.Tensor:
        return self.model(lr, hr)


class KDSRStudentObjective(_Distillation):
    """Distil the teacher's 256-d feature ``d`` (KL, τ = 0.15, + optional L1), then L1 + distillation."""

    l1_scale = 1.0
    stage1_prefixes = ("estimator.",)
    stage1_excluded = ("estimator.compress.",)  # d → IDR is not part of the distillation loss
    model: KDSR
    teacher: KDSRTeacher

    def __init__(
        self, student: KDSR, teacher: KDSRTeacher, temperature: float = KD_TEMPERATURE, feature_l1_weight: float = 0.0
    ) -> None:
        super().__init__(student, teacher)
        self.temperature = temperature
        self.feature_l1_weight = feature_l1_weight

    def forward(
        self, lr: torch.Tensor, hr: torch.Tensor, kernels: torch.Tensor, noise: torch.Tensor | None, stage: int
    ) -> Losses:
        lr0 = lr[:, 0]
        with torch.no_grad():
            teacher_feature, _ = self.teacher.estimate_features(lr0, hr[:, 0])
        feature, idr = self.model.estimate_features(lr0)
        kl = distillation_kl(feature, teacher_feature, self.temperature)
        l1_feature = F.l1_loss(feature.float(), teacher_feature.float())
        kd = kl + self.feature_l1_weight * l1_feature
        logs = {"kd": kd.detach(), "kd_kl": kl.detach(), "kd_l1": l1_feature.detach()}
        if stage == 1:
            return {"loss": kd, **logs}
        l1 = self.sr_l1(self.model.restore(lr0, idr), hr[:, 0])
        return {"loss": l1 + kd, "l1": l1.detach(), **logs}


# --------------------------------------------------------------------------- student initialisation


def init_student_from_teacher(student: nn.Module, teacher: nn.Module, *, estimator: bool = True) -> list[str]:
    """Copy the teacher's weights into the student, except the estimator's first convolution.

    The student's estimator sees only the LR image, so its first convolution has another
    number of input channels; every other student tensor (estimator, converter, SR
    network, BatchNorm statistics) is copied. Teacher-only tensors (projector, key
    encoder, queue, PCA basis) are ignored. With ``estimator=False`` (KDSR's recipe: the
    KDSR code's ``strict=False`` load of the teacher matches only the restorer's keys) the
    whole estimator keeps its initialisation. Returns the names left at their initial value.
    """
    first_conv = "estimator.layers.0.conv." if isinstance(student, LightBSR) else "estimator.head."
    source = teacher.state_dict()
    target = student.state_dict()
    kept = [name for name in target if name.startswith(first_conv if estimator else "estimator.")]
    copied = {}
    for name, value in target.items():
        if name in kept:
            continue
        if name not in source or source[name].shape != value.shape:
            raise CheckpointError(f"teacher has no tensor {name} of shape {tuple(value.shape)} for the student")
        copied[name] = source[name]
    student.load_state_dict(copied, strict=False)
    return kept
