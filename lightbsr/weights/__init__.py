"""Bundled model weights (lightbsr checkpoints shipped inside the package).

``default`` names the model ``lightbsr upscale`` and ``lightbsr eval default`` use
when no model is given. Weights are trained on a GPU (see the model card beside
them); a build without them says so instead of guessing.
"""

from __future__ import annotations

from pathlib import Path

from lightbsr.errors import ConfigError

WEIGHTS_DIR = Path(__file__).parent
BUNDLED = {
    1: "lightbsr_student_x4_setting1.safetensors",
    2: "lightbsr_student_x4_setting2.safetensors",
}


def default_checkpoint(setting: int = 1) -> Path:
    """Path of the bundled ×4 LightBSR student for ``setting``; a clear error if this build has none."""
    if setting not in BUNDLED:
        raise ConfigError(f"no bundled model for setting {setting}; settings: {sorted(BUNDLED)}")
    path = WEIGHTS_DIR / BUNDLED[setting]
    if not path.is_file():
        raise ConfigError(
            f"this build has no bundled setting-{setting} model ({path.name}); name a model file "
            "(a .safetensors checkpoint or an .onnx file) instead"
        )
    return path
