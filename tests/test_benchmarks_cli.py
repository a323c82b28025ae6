"""``lightbsr bench``: one command writes JSON, Markdown and PNG; eval tables; one-line errors."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest

from lightbsr.cli import main

sys.path.insert(0, str(Path(__file__).parent / "helpers"))

from export_fixtures import single_torch_thread, tiny_lightbsr
from runtime_models import export_onnx

DATA = Path(__file__).parent / "data"


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def eval_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `lightbsr eval --json` document (bicubic on the test crops: fast)."""
    code, out, _ = _run(["eval", "bicubic", "--dataset", str(DATA / "images"), "--sigma", "1.2", "--json"])
    assert code == 0
    path = tmp_path_factory.mktemp("eval") / "bicubic.json"
    path.write_text(out)
    return path


def test_one_command_writes_json_markdown_and_plot(tmp_path: Path, eval_json: Path) -> None:
    pytest.importorskip("matplotlib")
    onnx_path = tmp_path / "tiny.onnx"
    with single_torch_thread():
        export_onnx(tiny_lightbsr(), onnx_path, arch="lightbsr_student_x4", graphs=("full",))
    files = {ext: tmp_path / f"report.{ext}" for ext in ("json", "md", "png")}
    argv = ["bench", "lightbsr_student_x4", "--complexity", "--latency", "--onnx", str(onnx_path)]
    argv += ["--targets", "torch-fp32", "ort-cpu", "ort-cuda"]
    argv += ["--size", "8", "--threads", "1", "--warmup", "0", "--repeats", "2", "--no-progress"]
    argv += ["--image", str(DATA / "images" / "baby_crop.png"), "--eval-json", str(eval_json), "--note", "hello"]
    argv += ["--json", str(files["json"]), "--markdown", str(files["md"]), "--plot", str(files["png"])]
    code, out, err = _run(argv)
    assert code == 0, err
    document = json.loads(files["json"].read_text())
    assert document["schema"] == "lightbsr.bench/1" and document["notes"] == ["hello"]
    assert [(c["model"], c["height"]) for c in document["complexity"]] == [
        ("lightbsr_student_x4", 8),
        ("lightbsr_student_x4", 256),
        ("tiny.onnx", 256),
    ]
    rows = {r["target"]: r for r in document["latency"]["rows"]}
    assert rows["torch-fp32"]["status"] == "ok" and rows["ort-cpu-fp32"]["status"] == "ok"
    assert "torch-bf16" not in rows  # not among --targets
    cuda_skipped = rows["ort-cuda-fp32"]["status"] == "skipped"
    if cuda_skipped:
        assert "CUDAExecutionProvider" in rows["ort-cuda-fp32"]["reason"]
    assert document["environment"]["threads"] == 1 and document["environment"]["cpu"]
    evaluated = json.loads(eval_json.read_text())
    assert document["quality"] == [evaluated]
    md = files["md"].read_text()
    assert out == md  # the Markdown is also printed
    psnr = evaluated["datasets"][0]["mean"]["1.2"]["psnr"]
    assert f"{psnr:.2f}" in md and "| 8×8 | 1 | ort-cpu-fp32 |" in md
    assert ("ort-cuda-fp32: skipped" in md) == cuda_skipped
    assert files["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_tables_alone(eval_json: Path) -> None:
    code, out, _ = _run(["bench", "--eval-json", str(eval_json)])
    assert code == 0 and "## Quality" in out and "| bicubic | Bicubic | images | 3 |" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["bench"], "nothing to do"),
        (["bench", "no_such_arch", "--complexity"], "unknown architecture"),
        (["bench", "kdsr_teacher_m_x4", "--complexity"], "students"),
        (["bench", "lightbsr_student_x4", "--latency", "--targets", "bogus"], "unknown --targets"),
        (["bench", "m.onnx", "--targets", "bogus"], "measures only complexity"),
        (["bench", "lightbsr_student_x4", "--complexity", "--targets", "ort-cpu"], "measures only complexity"),
        (["bench", "lightbsr_student_x4", "--latency", "--onnx", "missing.onnx"], "no such ONNX file"),
        (["bench", "lightbsr_student_x4", "--size", "0", "--complexity"], "bad size"),
        (["bench", "m.onnx", "--latency"], "PyTorch reference"),
    ],
)
def test_errors_are_one_line(argv: list[str], message: str) -> None:
    code, _, err = _run(argv)
    assert code == 2
    assert err.startswith("lightbsr: error:") and message in err and err.count("\n") == 1


def test_plot_without_matplotlib_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = _run(["bench", "lightbsr_student_x4", "--complexity", "--plot", str(tmp_path / "p.png")])
    assert code == 2 and "pip install 'lightbsr[bench]'" in err
    assert not (tmp_path / "p.png").exists()


def test_help_explains_the_defaults() -> None:
    with pytest.raises(SystemExit) as exit_info:
        _run(["bench", "--help"])
    assert exit_info.value.code == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(out.getvalue().split())
    for needle in ("MACs", "--max-seconds", "(default: 30.0)", "ort-trt", "skipped", "--eval-json"):
        assert needle in text
