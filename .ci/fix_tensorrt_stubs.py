"""Make the installed ``tensorrt-stubs`` readable by mypy: copy them to build/mypy-stubs/ with two fixes.

As installed, tensorrt-stubs (checked: 10.13.0.35.1) gives mypy nothing:

1. it drops ``tensorrt/__init__.pyi`` and ``tensorrt_bindings/*.pyi`` into site-packages
   without a ``py.typed`` marker, so mypy skips them ("module is installed, but missing
   library stubs or py.typed marker") and, with ``ignore_missing_imports``, silently
   types all of ``tensorrt`` as Any;
2. read anyway, ``tensorrt_bindings/tensorrt.pyi`` is not valid Python: parameters named
   ``in`` (a keyword) and a parameter without a default after defaulted ones.

pyproject's ``mypy_path`` points at build/mypy-stubs, where the copy takes precedence over
site-packages. Without tensorrt-stubs installed nothing is written and mypy reports
``tensorrt`` as missing (pyproject makes that an error rather than Any).
"""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "build" / "mypy-stubs"
PACKAGES = ("tensorrt", "tensorrt_bindings")


def _split_params(params: str) -> list[str]:
    """Split a parameter list at top-level commas."""
    parts, depth, current = [], 0, ""
    for char in params:
        depth += char in "([{"
        depth -= char in ")]}"
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [*parts, current] if current.strip() else parts


def _fix_def(line: str) -> str:
    match = re.match(r"(\s*def \w+\()(.*)(\)\s*(?:->.*)?:.*)$", line)
    if not match:
        return line
    head, params, tail = match.groups()
    fixed, seen_default = [], False
    for param in _split_params(params):
        param = re.sub(r"^(\s*)in(\s*:)", r"\1in_\2", param)  # `in` is a keyword
        bare = param.strip()
        if "=" in bare:
            seen_default = True
        elif seen_default and bare and not bare.startswith("*"):
            param += " = ..."
        fixed.append(param)
    return head + ",".join(fixed) + tail


def fix_stub(text: str) -> str:
    return "\n".join(_fix_def(line) for line in text.split("\n"))


def main() -> int:
    shutil.rmtree(TARGET, ignore_errors=True)
    copied = 0
    for package in PACKAGES:
        spec = importlib.util.find_spec(package)
        for location in (spec.submodule_search_locations or []) if spec else []:
            for stub in Path(location).glob("*.pyi"):
                text = fix_stub(stub.read_text())
                ast.parse(text, filename=str(stub))  # fail here, clearly, if the fixes no longer suffice
                out = TARGET / package / stub.name
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(text)
                copied += 1
    if copied:
        print(f"fix_tensorrt_stubs: {copied} stub files → {TARGET.relative_to(ROOT)}")
    else:
        print("fix_tensorrt_stubs: tensorrt-stubs not installed; mypy will report tensorrt as missing", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
