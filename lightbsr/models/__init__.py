"""Model zoo: a small name → class table, configs, and the reference-checkpoint loader.

Architecture names: ``lightbsr_student_x{2,3,4}``, ``lightbsr_teacher_x{s}_setting{1,2}``,
``kdsr_student_m_x{s}``, ``kdsr_teacher_m_x{s}``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn

from lightbsr.contract import parse_scale
from lightbsr.errors import CheckpointError, ConfigError
from lightbsr.models.common import SUPPORTED_SCALES
from lightbsr.models.convert import (
    KDSR_STUDENT_RULES,
    KDSR_TEACHER_RULES,
    LIGHTBSR_STUDENT_RULES,
    LIGHTBSR_TEACHER_RULES,
    Rule,
    load_strict,
    rename_keys,
    unwrap_state_dict,
)
from lightbsr.models.kdsr import KDSR, KDSRTeacher
from lightbsr.models.lightbsr import LightBSR, LightBSRTeacher

Family = Literal["lightbsr", "kdsr"]
Role = Literal["student", "teacher"]

_ARCH_RE = re.compile(
    r"(?P<family>lightbsr|kdsr)_(?P<role>student|teacher)(?:_m)?_x(?P<scale>\d)(?:_setting(?P<setting>\d))?"
)

#: The five architectures proven against the authors' reference vectors.
REFERENCE_ARCHS = (
    "lightbsr_student_x4",
    "lightbsr_teacher_x4_setting1",
    "lightbsr_teacher_x4_setting2",
    "kdsr_student_m_x4",
    "kdsr_teacher_m_x4",
)


@dataclass(frozen=True)
class ModelConfig:
    """What a checkpoint needs to rebuild its model: family, role, scale and degradation setting.

    ``setting`` is part of the architecture for the LightBSR teacher (its DRP has
    15 or 18 channels); for students it records what the weights were trained for
    (``None``: unknown, e.g. reference weights).
    """

    family: Family
    role: Role
    scale: int = 4
    setting: int | None = None

    def __post_init__(self) -> None:
        if self.family not in ("lightbsr", "kdsr"):
            raise ConfigError(f"unknown model family {self.family!r}")
        if self.role not in ("student", "teacher"):
            raise ConfigError(f"unknown model role {self.role!r}")
        if self.scale not in SUPPORTED_SCALES:
            raise ConfigError(f"unsupported scale ×{self.scale}; supported: {SUPPORTED_SCALES}")
        if isinstance(self.setting, bool) or self.setting not in (None, 1, 2):
            raise ConfigError(f"unknown degradation setting {self.setting!r}; expected 1 or 2")
        if self.family == "lightbsr" and self.role == "teacher" and self.setting is None:
            raise ConfigError("the LightBSR teacher needs a setting (1 or 2)")

    @property
    def arch(self) -> str:
        """Canonical architecture name, e.g. ``lightbsr_teacher_x4_setting1``."""
        name = f"{self.family}_{self.role}{'_m' if self.family == 'kdsr' else ''}_x{self.scale}"
        if self.family == "lightbsr" and self.role == "teacher":
            name += f"_setting{self.setting}"
        return name

    @classmethod
    def from_arch(cls, arch: str, setting: int | None = None) -> ModelConfig:
        """Parse an architecture name; ``setting`` fills in a student's training setting."""
        match = _ARCH_RE.fullmatch(arch)
        if match is None:
            raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(known_archs())}")
        family, role = match["family"], match["role"]
        if (family == "kdsr") != ("_m_" in arch):
            raise ConfigError(f"unknown architecture {arch!r}; known: {', '.join(known_archs())}")
        parsed_setting = int(match["setting"]) if match["setting"] else None
        if parsed_setting is not None and not (family == "lightbsr" and role == "teacher"):
            raise ConfigError(f"unknown architecture {arch!r}: only the LightBSR teacher names a setting")
        if parsed_setting is not None and setting is not None and parsed_setting != setting:
            raise ConfigError(f"{arch} is a setting-{parsed_setting} model, not setting {setting}")
        return cls(family, role, int(match["scale"]), parsed_setting if parsed_setting is not None else setting)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        if "arch" not in data:
            raise ConfigError("model config has no 'arch'")
        config = cls.from_arch(str(data["arch"]), data.get("setting"))
        if "scale" in data and parse_scale(data["scale"]) != config.scale:
            raise ConfigError(f"model config says scale {data['scale']} but arch {data['arch']}")
        return config


def known_archs() -> list[str]:
    names = []
    for scale in SUPPORTED_SCALES:
        names += [
            f"lightbsr_student_x{scale}",
            f"lightbsr_teacher_x{scale}_setting1",
            f"lightbsr_teacher_x{scale}_setting2",
            f"kdsr_student_m_x{scale}",
            f"kdsr_teacher_m_x{scale}",
        ]
    return names


def build_model(config: ModelConfig | str) -> nn.Module:
    """A freshly initialised model for ``config`` (or an architecture name)."""
    if isinstance(config, str):
        config = ModelConfig.from_arch(config)
    if config.family == "lightbsr":
        if config.role == "student":
            return LightBSR(config.scale)
        assert config.setting is not None
        return LightBSRTeacher(config.scale, config.setting)
    return KDSR(config.scale) if config.role == "student" else KDSRTeacher(config.scale)


def reference_rules(config: ModelConfig) -> list[Rule]:
    if config.family == "lightbsr":
        return LIGHTBSR_STUDENT_RULES if config.role == "student" else LIGHTBSR_TEACHER_RULES
    return KDSR_STUDENT_RULES if config.role == "student" else KDSR_TEACHER_RULES


def detect_reference_arch(state_dict: Mapping[str, torch.Tensor]) -> ModelConfig:
    """Recognise a reference-layout checkpoint's architecture from its keys and shapes."""
    keys = set(state_dict)
    if "G.tail.0.2.weight" in keys:
        scale = 4
    elif "G.tail.0.0.weight" in keys:
        scale = 3 if state_dict["G.tail.0.0.weight"].shape[0] == 9 * 64 else 2
    else:
        raise CheckpointError("not an authors'-layout LightBSR/KDSR checkpoint (no G.tail.* upsampler keys)")
    if "E.encoder_q.E.0.weight" in keys:
        in_channels = state_dict["E.encoder_q.E.0.weight"].shape[1]
        if in_channels not in (18, 21):
            raise CheckpointError(f"LightBSR teacher estimator takes {in_channels} channels; expected 18 or 21")
        return ModelConfig("lightbsr", "teacher", scale, 1 if in_channels == 18 else 2)
    if "G.compress.0.weight" in keys:
        return ModelConfig("lightbsr", "student", scale)
    if "E_st.E.0.weight" in keys:
        return ModelConfig("kdsr", "student", scale)
    if "E.E.0.weight" in keys and any(k.startswith("G.body.0.body.0.da_conv1") for k in keys):
        return ModelConfig("kdsr", "teacher", scale)
    raise CheckpointError("not an authors'-layout LightBSR/KDSR checkpoint (unrecognised estimator keys)")


def convert_reference_state_dict(state_dict: Mapping[str, Any], config: ModelConfig) -> dict[str, torch.Tensor]:
    """Authors' layout → our key names (strict: unknown keys are an error)."""
    return rename_keys(unwrap_state_dict(state_dict), reference_rules(config))


def load_reference_checkpoint(
    state_dict: Mapping[str, Any], arch: str, pca_basis: torch.Tensor | None = None
) -> nn.Module:
    """Build ``arch`` and load an authors'-layout state dict into it, strictly; returns the model in eval mode.

    The authors' LightBSR teacher checkpoints do not hold the PCA basis their degradation
    prior is computed on: their run saves it beside them (``PCA_matrix.mat``). Pass it as
    ``pca_basis`` (15, 441) — :func:`lightbsr.checkpoint.read_pca_matrix` reads that file;
    without it a LightBSR teacher is refused rather than given another basis.
    """
    config = ModelConfig.from_arch(arch)
    state = unwrap_state_dict(state_dict)
    detected = detect_reference_arch(state)
    if (detected.family, detected.role, detected.scale) != (config.family, config.role, config.scale) or (
        config.role == "teacher" and config.family == "lightbsr" and detected.setting != config.setting
    ):
        raise CheckpointError(f"checkpoint holds a {detected.arch} model, not {config.arch}")
    model = build_model(config)
    converted = rename_keys(state, reference_rules(config))
    if isinstance(model, LightBSRTeacher):
        if pca_basis is None:
            raise CheckpointError(
                "an authors' LightBSR teacher needs the PCA basis its run saved beside it (PCA_matrix.mat): "
                "its degradation prior is computed on that basis, which the checkpoint does not hold"
            )
        converted["pca_basis"] = pca_basis
    elif pca_basis is not None:
        raise CheckpointError(f"a PCA basis is for LightBSR teachers, not {config.arch}")
    load_strict(model, converted)
    return model.eval()


__all__ = [
    "KDSR",
    "REFERENCE_ARCHS",
    "KDSRTeacher",
    "LightBSR",
    "LightBSRTeacher",
    "ModelConfig",
    "build_model",
    "convert_reference_state_dict",
    "detect_reference_arch",
    "known_archs",
    "load_reference_checkpoint",
]
