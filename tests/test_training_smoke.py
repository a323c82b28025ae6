"""End-to-end training through the CLI on CPU: teacher → student for LightBSR and KDSR, and exact resume.

Tiny on purpose (4 crops of 96×96 images, LR patches of 16×16 or 8×8, batch 2), single-threaded
so that timings do not depend on how busy the second core is.
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lightbsr.checkpoint import load_checkpoint, read_checkpoint
from lightbsr.cli import main
from lightbsr.degradation import isotropic_kernel
from lightbsr.models import build_model
from lightbsr.training.schedule import ClockSchedule
from lightbsr.training.state import MAX_FILE_BYTES
from lightbsr.training.trainer import Schedule

DATA = Path(__file__).parent / "data"
TRAIN = DATA / "train"
IMAGES = DATA / "images"
SMALL = ["--batch-size", "2", "--log-every", "1", "--threads", "1", "--no-progress"]


@pytest.fixture(scope="module", autouse=True)
def _restore_threads():  # --threads 1 sets the process-wide torch thread count
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _train(*args: object) -> None:
    assert main(["train", *map(str, args), *SMALL]) == 0


def _log(run: Path) -> list[dict[str, str]]:
    with (run / "log.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def lightbsr_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("lightbsr")
    teacher, student = root / "teacher", root / "student"
    common = ["--setting", 1, "--data", TRAIN, "--patch-size", 16, "--val-data", IMAGES, "--val-patch", 64]
    _train("teacher", *common, "--out", teacher, "--iterations", 50, "--stage1-iterations", 20, "--val-every", 25)
    _train(
        "student", *common, "--out", student, "--teacher", teacher, "--iterations", 40, "--stage1-iterations", 20,
        "--val-every", 20,
    )  # fmt: skip
    return teacher, student


def test_lightbsr_runs_write_loadable_checkpoints(lightbsr_runs: tuple[Path, Path]) -> None:
    teacher_run, student_run = lightbsr_runs
    lr = torch.rand(1, 3, 12, 12)
    for run, arch in ((teacher_run, "lightbsr_teacher_x4_setting1"), (student_run, "lightbsr_student_x4")):
        for name in ("model.safetensors", "best.safetensors"):
            model, config = load_checkpoint(run / name)
            assert config.arch == arch and config.setting == 1
            with torch.no_grad():
                sr = model(lr) if config.role == "student" else model(lr, model.drp(isotropic_kernel(2.0)[None]))
            assert sr.shape == (1, 3, 48, 48) and torch.isfinite(sr).all()
        files = [p for p in run.rglob("*") if p.is_file()]
        assert files and all(p.stat().st_size < MAX_FILE_BYTES for p in files)
    # the LightBSR student is exported in float32; the teacher (queue + key encoder) only fits in fp16
    assert read_checkpoint(student_run / "model.safetensors")[0]["head.weight"].dtype == torch.float32
    assert read_checkpoint(teacher_run / "model.safetensors")[0]["head.weight"].dtype == torch.float16
    teacher = load_file(next((teacher_run / "state").glob("iter-*/model-000.safetensors")))
    assert teacher["head.weight"].dtype == torch.float32  # the resume state keeps full precision


def test_lightbsr_logs_follow_the_two_stage_schedule(lightbsr_runs: tuple[Path, Path]) -> None:
    teacher_run, student_run = lightbsr_runs
    teacher, student = _log(teacher_run), _log(student_run)
    assert [int(r["iteration"]) for r in teacher] == list(range(1, 51))
    schedule = Schedule(total=50, stage1=20, warmup=0, lr=2e-4, min_lr=1e-6)
    for row in teacher:
        i = int(row["iteration"]) - 1
        assert int(row["stage"]) == schedule.stage(i)
        assert float(row["lr"]) == pytest.approx(schedule.learning_rate(i))
        assert (row["l1"] != "") == (i >= 20) and row["contrast"] != ""
    assert all(r["l1"] == "" and float(r["kd"]) > 0 for r in student[:20])
    assert all(float(r["loss"]) == pytest.approx(float(r["l1"]) + float(r["kd"]), rel=1e-4) for r in student[20:])
    for run, rows in ((teacher_run, ["25", "50"]), (student_run, ["20", "40"])):
        with (run / "val.csv").open(newline="") as handle:
            assert [r["iteration"] for r in csv.DictReader(handle)] == rows


def test_teacher_reconstruction_loss_falls(lightbsr_runs: tuple[Path, Path]) -> None:
    """Over the 30 stage-2 iterations (from random initialisation) the mean L1 of the last 8 drops well below
    that of the first 8 (seeded: deterministic on a given platform)."""
    l1 = [float(r["l1"]) for r in _log(lightbsr_runs[0]) if r["l1"]]
    assert len(l1) == 30
    first, last = sum(l1[:8]) / 8, sum(l1[-8:]) / 8
    assert last < 0.8 * first, (first, last)


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    """Setting 2 (noise) teacher with MoCo: 8 iterations at once vs 5, stop, --resume to 8."""
    args = ["teacher", "--setting", 2, "--data", TRAIN, "--patch-size", 8, "--iterations", 8]
    args += ["--stage1-iterations", 3, "--save-every", 2, "--seed", 3]
    _train(*args, "--out", tmp_path / "full")
    _train(*args, "--out", tmp_path / "split", "--stop-at", 5)
    assert len(_log(tmp_path / "split")) == 5
    _train(*args, "--out", tmp_path / "split", "--resume")
    columns = ["iteration", "stage", "lr", "loss", "l1", "contrast"]
    full, split = _log(tmp_path / "full"), _log(tmp_path / "split")
    assert [[r[c] for c in columns] for r in split] == [[r[c] for c in columns] for r in full]
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # queue and key encoder included
    assert [p.name for p in (tmp_path / "split" / "state").iterdir() if p.is_dir()] == ["iter-00000008"]


def test_a_run_is_never_restarted_over_its_state(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["train", "teacher", "--setting", "1", "--data", str(TRAIN), "--out", str(tmp_path), *SMALL]
    args += ["--patch-size", "8", "--iterations", "4", "--stage1-iterations", "2", "--stop-at", "1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main(args) == 2
    assert "already holds a training state" in capsys.readouterr().err
    assert main([*args, "--resume", "--batch-size", "4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "batch_size=4" in err


@pytest.mark.parametrize("clock", ["wall", "cpu"])
def test_time_budget_run_ends_its_cosine_when_the_time_does_and_resumes(tmp_path: Path, clock: str) -> None:
    """A 6 s budget: stage 1 for its share of the clock, stage 2 down to the minimum rate, a stop and a resume.
    On the CPU clock the budget is this process's CPU time per thread (here one thread)."""
    run = tmp_path / "t"
    args = ["teacher", "--setting", 1, "--data", TRAIN, "--patch-size", 8, "--out", run, "--time-budget", "6s"]
    args += ["--stage1-share", 0.25, "--min-lr", 1e-6, "--budget-clock", clock]
    _train(*args, "--stop-at", 3)
    assert len(_log(run)) == 3
    _train(*args, "--resume")
    rows = _log(run)
    elapsed = [float(r["elapsed_s"]) for r in rows]
    assert all(a <= b for a, b in itertools.pairwise(elapsed)), "the clock carries over the resume"
    # Each step reads the clock before it runs (stage, rate) and logs it after: a step starts no earlier than the
    # previous row's time and no later than its own. That makes these checks exact, however loaded the machine
    # (up to the millisecond the log rounds to).
    ms = 5e-4
    assert elapsed[-2] - ms < 6.0 <= elapsed[-1] + ms, "it stops after the first step that ends past the budget"
    schedule = ClockSchedule(6.0, 0.25, 2e-4, 1e-6)
    warmed_up = 1.5 + 4.5 * schedule.warmup_share
    for before, after, row in zip([0.0, *elapsed], elapsed, rows, strict=False):
        stage, lr = int(row["stage"]), float(row["lr"])
        if after + ms < 1.5:
            assert stage == 1, row
        if before - ms >= 1.5:
            assert stage == 2, row
        if before - ms >= warmed_up:  # on the cosine: the rate of a step lies between those at its two bounds
            assert schedule.at(0, after + ms)[1] <= lr <= schedule.at(0, before - ms)[1], row
    stages = [int(r["stage"]) for r in rows]
    assert stages == sorted(stages) and stages[0] == 1 and stages[-1] == 2
    assert float(rows[-1]["lr"]) <= schedule.at(0, elapsed[-2] - ms)[1], "the last step is at the cosine's end"
    done_before = len(rows)
    _train(*args, "--resume")  # a finished run stays finished
    assert len(_log(run)) == done_before
    assert load_checkpoint(run / "model.safetensors")[1].arch == "lightbsr_teacher_x4_setting1"


def test_init_starts_a_new_run_from_another_runs_weights(tmp_path: Path) -> None:
    common = ["teacher", "--setting", 1, "--data", TRAIN, "--patch-size", 8, "--iterations", 2]
    _train(*common, "--out", tmp_path / "a", "--stage1-iterations", 1)
    _train(*common, "--out", tmp_path / "b", "--stage1-iterations", 0, "--init", tmp_path / "a", "--stop-at", 1)
    start = load_file(str(next((tmp_path / "a" / "state").glob("iter-*/model-000.safetensors"))))
    after = load_file(str(next((tmp_path / "b" / "state").glob("iter-*/model-000.safetensors"))))
    # the queue continues from run a's (a fresh one would be random); trained weights moved one step from a's
    assert not torch.equal(start["head.weight"], after["head.weight"])
    assert torch.allclose(start["head.weight"], after["head.weight"], atol=1e-3)
    fresh = build_model(load_checkpoint(tmp_path / "a" / "model.safetensors")[1]).state_dict()["head.weight"]
    assert not torch.allclose(fresh, after["head.weight"], atol=1e-3)
    bad = ["student", "--setting", 1, "--data", TRAIN, "--patch-size", 8, "--iterations", 2, "--out", tmp_path / "c"]
    assert main(["train", *map(str, bad), "--teacher", str(tmp_path / "a"), "--init", str(tmp_path / "a"), *SMALL]) == 2


def test_kdsr_teacher_and_student(tmp_path: Path) -> None:
    common = ["--setting", 2, "--data", TRAIN, "--patch-size", 16, "--arch", "kdsr"]
    _train("teacher", *common, "--out", tmp_path / "teacher", "--iterations", 3)
    _train(
        "student", *common, "--out", tmp_path / "student", "--teacher", tmp_path / "teacher", "--iterations", 5,
        "--val-data", IMAGES, "--val-every", 2, "--val-patch", 64,
    )  # fmt: skip
    teacher_log, student_log = _log(tmp_path / "teacher"), _log(tmp_path / "student")
    assert [r["stage"] for r in teacher_log] == ["2", "2", "2"]
    # KDSR's recipe (the default): stage 1 is 100 of the 500 epochs of the setting-2 student, at 2e-4, then 1e-4
    assert [r["l1"] != "" for r in student_log] == [False, True, True, True, True]
    # the plan keeps its proportions over 5 iterations: stage 2 halves every 125/500 of the run
    assert [float(r["lr"]) for r in student_log] == [2e-4, 1e-4, 1e-4, 5e-5, 2.5e-5]
    assert [float(r["lr"]) for r in teacher_log] == [1e-4, 5e-5, 2.5e-5]
    model, config = load_checkpoint(tmp_path / "student" / "best.safetensors")
    assert config.arch == "kdsr_student_m_x4" and config.setting == 2
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(1, 3, 10, 10))).all()
    teacher, _ = load_checkpoint(tmp_path / "teacher" / "model.safetensors")
    with torch.no_grad():
        assert torch.isfinite(teacher(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 32, 32))).all()
