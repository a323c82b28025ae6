"""The authors' checkpoint layout → ours.

The reference code names parameters after its own module tree (``G.body.3.body.5
.spatial_mixing.loc.avgafter.0.weight``); our modules are named for what they do
(``groups.3.blocks.5.channel_attn1.weight``). Each family has an explicit,
ordered list of rewrite rules; conversion is strict: a key no rule maps, or a
key the model expects but the checkpoint lacks, is an error that names them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

from lightbsr.errors import CheckpointError

Rule = tuple[str, str]

_LIGHTBSR_SR_RULES: list[Rule] = [
    (r"G\.(sub_mean|add_mean)\.(.+)", r"\1.\2"),
    (r"G\.head\.0\.(.+)", r"head.\1"),
    (r"G\.compress\.0\.(.+)", r"converter.channel.\1"),
    (r"G\.afterpixshuffle\.0\.(.+)", r"converter.spatial.\1"),
    (r"G\.body\.(\d+)\.ca_change\.avgafter\.0\.(.+)", r"groups.\1.correction.channel_fc1.\2"),
    (r"G\.body\.(\d+)\.ca_change\.avgafter\.2\.(.+)", r"groups.\1.correction.channel_fc2.\2"),
    (r"G\.body\.(\d+)\.xk_change\.sig1\.0\.(.+)", r"groups.\1.correction.spatial_conv1.\2"),
    (r"G\.body\.(\d+)\.xk_change\.sig1\.2\.(.+)", r"groups.\1.correction.spatial_conv2.\2"),
    # inside a group: blocks 0-7 are adaptation blocks, 8 the ConvNeXt block, 9 the conv
    (
        r"G\.body\.(\d+)\.body\.([0-7])\.spatial_mixing\.spatial_attention\.0\.(.+)",
        r"groups.\1.blocks.\2.spatial_attn1.\3",
    ),
    (
        r"G\.body\.(\d+)\.body\.([0-7])\.spatial_mixing\.spatial_attention\.2\.(.+)",
        r"groups.\1.blocks.\2.spatial_attn2.\3",
    ),
    (r"G\.body\.(\d+)\.body\.([0-7])\.spatial_mixing\.partial_conv3\.(.+)", r"groups.\1.blocks.\2.spatial_fuse.\3"),
    (r"G\.body\.(\d+)\.body\.([0-7])\.spatial_mixing\.loc\.avgafter\.0\.(.+)", r"groups.\1.blocks.\2.channel_attn1.\3"),
    (r"G\.body\.(\d+)\.body\.([0-7])\.spatial_mixing\.loc\.avgafter\.2\.(.+)", r"groups.\1.blocks.\2.channel_attn2.\3"),
    (r"G\.body\.(\d+)\.body\.([0-7])\.((?:dwconv|norm|pwconv1|pwconv2)\..+|gamma)", r"groups.\1.blocks.\2.mix.\3"),
    (r"G\.body\.(\d+)\.body\.8\.(.+)", r"groups.\1.convnext.\2"),
    (r"G\.body\.(\d+)\.body\.9\.(.+)", r"groups.\1.conv.\2"),
    (r"G\.body\.8\.(.+)", r"body_conv.\1"),
    (r"G\.tail\.0\.(\d+)\.(.+)", r"upsampler.\1.\2"),
    (r"G\.tail\.1\.(.+)", r"tail.\1"),
]


def _estimator_rules(src: str, dst: str) -> list[Rule]:
    """LightBSR estimator Sequential(conv, BN, LReLU, ...) index 3l / 3l+1 → layers.l.conv / .bn."""
    rules = []
    for layer in range(6):
        rules.append((rf"{src}\.{3 * layer}\.(.+)", rf"{dst}.layers.{layer}.conv.\1"))
        rules.append((rf"{src}\.{3 * layer + 1}\.(.+)", rf"{dst}.layers.{layer}.bn.\1"))
    return rules


LIGHTBSR_STUDENT_RULES: list[Rule] = _LIGHTBSR_SR_RULES + _estimator_rules(r"E\.E", "estimator")

LIGHTBSR_TEACHER_RULES: list[Rule] = [
    *_LIGHTBSR_SR_RULES,
    *_estimator_rules(r"E\.encoder_q\.E", "estimator"),
    *_estimator_rules(r"E\.encoder_k\.E", "key_estimator"),
    (r"E\.encoder_q\.mlp\.(\d+)\.(.+)", r"projector.\1.\2"),
    (r"E\.encoder_k\.mlp\.(\d+)\.(.+)", r"key_projector.\1.\2"),
    (r"E\.(queue|queue_ptr)", r"\1"),
]


def _kdsr_rules(estimator_prefix: str) -> list[Rule]:
    e = estimator_prefix
    return [
        (r"G\.(sub_mean|add_mean)\.(.+)", r"\1.\2"),
        (r"G\.head\.0\.(.+)", r"head.\1"),
        (r"G\.body\.0\.body\.(\d+)\.da_conv1\.kernel\.0\.(.+)", r"blocks.\1.kernel_fc1.\2"),
        (r"G\.body\.0\.body\.(\d+)\.da_conv1\.kernel\.2\.(.+)", r"blocks.\1.kernel_fc2.\2"),
        (r"G\.body\.0\.body\.(\d+)\.conv1\.(.+)", r"blocks.\1.conv.\2"),
        (r"G\.body\.1\.(.+)", r"body_conv.\1"),
        (r"G\.tail\.0\.(\d+)\.(.+)", r"upsampler.\1.\2"),
        (r"G\.tail\.1\.(.+)", r"tail.\1"),
        (rf"{e}\.E\.0\.(.+)", r"estimator.head.\1"),
        *[(rf"{e}\.E\.{i + 2}\.body\.0\.(.+)", rf"estimator.blocks.{i}.conv1.\1") for i in range(9)],
        *[(rf"{e}\.E\.{i + 2}\.body\.2\.(.+)", rf"estimator.blocks.{i}.conv2.\1") for i in range(9)],
        (rf"{e}\.E\.11\.(.+)", r"estimator.conv1.\1"),
        (rf"{e}\.E\.13\.(.+)", r"estimator.conv2.\1"),
        (rf"{e}\.E\.15\.(.+)", r"estimator.conv3.\1"),
        (rf"{e}\.mlp\.0\.(.+)", r"estimator.fc1.\1"),
        (rf"{e}\.mlp\.2\.(.+)", r"estimator.fc2.\1"),
        (rf"{e}\.compress\.0\.(.+)", r"estimator.compress.\1"),
    ]


KDSR_STUDENT_RULES: list[Rule] = _kdsr_rules(r"E_st")
KDSR_TEACHER_RULES: list[Rule] = _kdsr_rules(r"E")

_WRAPPER_KEYS = ("state_dict", "model", "params", "params_ema", "net")


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """Accept a bare state dict, one wrapped under a usual key, and strip a ``module.`` prefix."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError("not a state dict: expected a mapping of parameter names to tensors")
    return {str(k).removeprefix("module."): v for k, v in obj.items()}


def rename_keys(state_dict: Mapping[str, torch.Tensor], rules: list[Rule]) -> dict[str, torch.Tensor]:
    """Rename every key with the first matching rule; unknown keys are an error naming them."""
    compiled = [(re.compile(pattern), replacement) for pattern, replacement in rules]
    out: dict[str, torch.Tensor] = {}
    unknown: list[str] = []
    for key, value in state_dict.items():
        for pattern, replacement in compiled:
            if pattern.fullmatch(key):
                out[pattern.sub(replacement, key)] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"{len(unknown)} unknown key(s) for this architecture: {_sample(unknown)}")
    return out


def _sample(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(sorted(keys)[:limit])
    return shown + (f", … ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_strict(
    model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], optional: frozenset[str] = frozenset()
) -> None:
    """Load with every key, shape and value checked; ``optional`` keys may be absent (they keep the model's value).

    A tensor that the model holds in floating point must be floating point and finite: an integer
    tensor there, or a NaN/inf value, would load without complaint and make every output wrong.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in expected]
    if missing:
        raise CheckpointError(f"{len(missing)} missing key(s): {_sample(missing)}")
    if unexpected:
        raise CheckpointError(f"{len(unexpected)} unexpected key(s): {_sample(unexpected)}")
    wrong = [
        f"{k} {tuple(v.shape)} (model: {tuple(expected[k].shape)})"
        for k, v in state_dict.items()
        if tuple(v.shape) != tuple(expected[k].shape)
    ]
    if wrong:
        raise CheckpointError(f"{len(wrong)} shape mismatch(es), wrong architecture? {_sample(wrong, 3)}")
    floats = [k for k in state_dict if expected[k].is_floating_point()]
    typed = [f"{k} ({state_dict[k].dtype})" for k in floats if not state_dict[k].is_floating_point()]
    if typed:
        raise CheckpointError(f"{len(typed)} tensor(s) not floating point, as the model's are: {_sample(typed, 3)}")
    bad = [k for k in floats if not bool(torch.isfinite(state_dict[k]).all())]
    if bad:
        raise CheckpointError(f"{len(bad)} tensor(s) hold NaN or infinite values: {_sample(bad)}")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state_dict.items()}, strict=False)
