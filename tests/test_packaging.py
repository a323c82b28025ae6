"""Packaging: every package folder is mapped, the wheel carries the stages, and light modules stay torch-free."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STAGES = {
    "lightbsr.training": "training",
    "lightbsr.export": "export",
    "lightbsr.runtime": "runtime",
    "lightbsr.benchmarks": "benchmarks",
}


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _package_folders() -> dict[str, Path]:
    """Every folder holding an __init__.py under lightbsr/ and the stage folders, by dotted package name."""
    found = {}
    roots = {"lightbsr": ROOT / "lightbsr", **{name: ROOT / folder for name, folder in STAGES.items()}}
    for name, root in roots.items():
        for init in root.rglob("__init__.py"):
            rel = init.parent.relative_to(root)
            found[".".join([name, *rel.parts])] = init.parent
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    setuptools = _pyproject()["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"lightbsr": "lightbsr", **STAGES}
    assert sorted(setuptools["packages"]) == sorted(_package_folders())


def test_stage_imports_resolve_to_stage_folders() -> None:
    import importlib

    for name, folder in STAGES.items():
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve().parent == ROOT / folder


@pytest.mark.slow
def test_wheel_contains_and_imports_the_stages(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("lightbsr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for folder in _package_folders():
        assert folder.replace(".", "/") + "/__init__.py" in names
    assert "lightbsr/py.typed" in names
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import lightbsr, lightbsr.training, lightbsr.export, lightbsr.runtime, lightbsr.benchmarks, lightbsr.models;"
        f"assert lightbsr.runtime.__file__.startswith({str(target)!r}), lightbsr.runtime.__file__"
    )
    # run outside the repository so the source tree cannot shadow the installed wheel
    result = subprocess.run(
        [sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(target)!r}); {code}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr


TORCH_FREE = ["lightbsr", "lightbsr.errors", "lightbsr.files", "lightbsr.contract", "lightbsr.weights", "lightbsr.cli"]


def test_light_modules_and_cli_parser_import_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None\n"
        + "".join(f"import {name}\n" for name in TORCH_FREE)
        + "from lightbsr.cli import build_parser; build_parser()\n"
        + "assert sys.modules['torch'] is None\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


def test_console_script_is_declared() -> None:
    assert _pyproject()["project"]["scripts"]["lightbsr"] == "lightbsr.cli:main"


def test_version_flag() -> None:
    result = subprocess.run([sys.executable, "-m", "lightbsr", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.startswith("lightbsr ")


def test_atomic_output_gives_normal_permissions(tmp_path: Path) -> None:
    import os

    from lightbsr.files import atomic_output

    with atomic_output(tmp_path / "x.bin") as tmp:
        tmp.unlink()  # like writers that replace the file (safetensors does), creating it 0600
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"1")
        os.close(fd)
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "x.bin").stat().st_mode & 0o777 == 0o666 & ~mask
