"""Training building blocks: losses, schedule, data pipeline, resume-state files, student initialisation."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightbsr import degradation as D
from lightbsr.errors import CheckpointError, ConfigError, DatasetError
from lightbsr.models import build_model
from lightbsr.training import state as S
from lightbsr.training.data import (
    CropDataset,
    ImageStore,
    IterationBatches,
    degradation_size,
    list_training_images,
    synthesize,
)
from lightbsr.training.losses import distillation_kl, idr_distillation, moco_info_nce
from lightbsr.training.objectives import LightBSRTeacherObjective, init_student_from_teacher
from lightbsr.training.schedule import ClockSchedule, format_duration, parse_duration
from lightbsr.training.trainer import Schedule, TrainConfig, _merge_resumed

TRAIN = Path(__file__).parent / "data" / "train"


# --------------------------------------------------------------------------- losses


def _moco_reference(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, tau: float) -> torch.Tensor:
    """The authors' loop: cross entropy of [q_i·k_j, q_i·queue]/τ with target 0, averaged over i ≠ j."""
    d = q.shape[0]
    loss = torch.zeros(())
    for i in range(d):
        for j in range(d):
            if i == j:
                continue
            pos = (q[i] * k[j]).sum(1, keepdim=True)
            logits = torch.cat([pos, q[i] @ queue], dim=1) / tau
            loss = loss + F.cross_entropy(logits, torch.zeros(q.shape[1], dtype=torch.long))
    return loss / (d * (d - 1))


def test_moco_info_nce_matches_the_reference_loop() -> None:
    g = torch.Generator().manual_seed(0)
    q = F.normalize(torch.randn(4, 5, 16, generator=g), dim=2)
    k = F.normalize(torch.randn(4, 5, 16, generator=g), dim=2)
    queue = F.normalize(torch.randn(16, 32, generator=g), dim=0)
    ours = moco_info_nce(q, k, queue, 0.07)
    assert torch.allclose(ours, _moco_reference(q, k, queue, 0.07), rtol=1e-5, atol=1e-5)
    # crops that agree perfectly (one vector per image) against random negatives: a much smaller loss
    agreeing = q[:1].expand(4, -1, -1)
    assert moco_info_nce(agreeing, agreeing, queue, 0.07) < 0.5 < ours
    with pytest.raises(ValueError):
        moco_info_nce(q[:1], k[:1], queue, 0.07)


def test_distillation_losses_follow_their_formulas() -> None:
    g = torch.Generator().manual_seed(1)
    c_s, c_t = torch.randn(3, 48, generator=g), torch.randn(3, 48, generator=g)
    s_s, s_t = torch.randn(3, 8, 5, 5, generator=g), torch.randn(3, 8, 5, 5, generator=g)
    p_t = F.softmax(c_t / 0.15, dim=1)
    kl = (p_t * (p_t.log() - F.log_softmax(c_s / 0.15, dim=1))).sum(1).mean()
    assert torch.allclose(distillation_kl(c_s, c_t, 0.15), kl, rtol=1e-5)
    terms = idr_distillation((c_s, s_s), (c_t, s_t), 0.15, 0.1)
    expected = ((s_s - s_t) ** 2).mean() + kl + 0.1 * (c_s - c_t).abs().mean()
    assert torch.allclose(terms["kd"], expected, rtol=1e-5)
    assert distillation_kl(c_t, c_t, 0.15).abs() < 1e-6


# --------------------------------------------------------------------------- schedule and configuration


def test_schedule_stages_warmup_and_cosine() -> None:
    s = Schedule(total=700, stage1=100, warmup=5, lr=2e-4, min_lr=1e-6)
    assert [s.stage(i) for i in (0, 99, 100, 699)] == [1, 1, 2, 2]
    assert s.learning_rate(0) == s.learning_rate(99) == 2e-4
    assert [s.learning_rate(100 + t) for t in range(5)] == pytest.approx([2e-4 * (t + 1) / 5 for t in range(5)])
    assert s.learning_rate(105) == pytest.approx(2e-4)
    lrs = [s.learning_rate(i) for i in range(105, 700)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    assert lrs[-1] == pytest.approx(1e-6, abs=2e-8)
    assert s.learning_rate(105 + (595 // 2)) == pytest.approx((2e-4 + 1e-6) / 2, rel=1e-2)


def _config(**kw: object) -> TrainConfig:
    base: dict[str, object] = {"role": "teacher", "arch": "lightbsr", "setting": 1, "data": "d", "out": "o"}
    return TrainConfig(**{**base, **kw})  # type: ignore[arg-type]


def test_config_defaults_follow_the_papers_proportions() -> None:
    c = _config(iterations=700_000).resolved(torch.device("cpu"))
    assert (c.stage1_iterations, c.warmup_iterations, c.crops, c.kd_l1_weight, c.amp) == (
        100_000,
        5000,
        4,
        0.1,
        "off",
    )
    k = _config(arch="kdsr", iterations=70).resolved(torch.device("cpu"))
    assert (k.stage1_iterations, k.crops, k.kd_l1_weight) == (0, 1, 0.0)


@pytest.mark.parametrize(
    "bad",
    [
        {"arch": "kdsr", "stage1_iterations": 5},
        {"crops": 1},
        {"amp": "fp16"},
        {"role": "student"},
        {"teacher": "x"},
        {"stage1_iterations": 11, "iterations": 10},
        {"patch_size": 2},
        {"stop_at": 0},
        {"scale": 5},
        {"threads": 0},
        {"time_budget": 60.0, "iterations": 100},
        {"time_budget": 60.0, "stage1_iterations": 3},
        {"time_budget": 60.0, "warmup_iterations": 3},
        {"time_budget": 60.0, "stage1_share": 1.0},
        {"time_budget": 60.0, "stage1_share": -0.1},
        {"time_budget": 0.0},
        {"time_budget": 60.0, "arch": "kdsr", "stage1_share": 0.2},
        {"stage1_share": 0.2},
    ],
)
def test_config_rejects_inconsistent_options(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        _config(**bad).resolved(torch.device("cpu"))


def test_clock_schedule_fits_stages_warmup_and_cosine_to_the_budget() -> None:
    s = ClockSchedule(budget=700.0, stage1_share=1 / 7, lr=2e-4, min_lr=1e-6)
    assert [s.at(0, t)[0] for t in (0.0, 99.9, 100.0, 699.0)] == [1, 1, 2, 2]
    assert s.at(0, 50.0)[1] == 2e-4
    warmup = 600 * 5 / 600  # seconds: 5/600 of stage 2
    assert s.at(0, 100 + warmup / 2)[1] == pytest.approx(1e-4)
    lrs = [s.at(0, t)[1] for t in np.linspace(100 + warmup, 700, 200)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))
    assert lrs[0] == pytest.approx(2e-4) and lrs[-1] == pytest.approx(1e-6)
    assert not s.done(10**6, 699.9) and s.done(0, 700.0)
    # the iteration count does not matter, only the clock: a slower machine ends its cosine on time
    assert s.at(5, 400.0) == s.at(5000, 400.0)
    assert "≈ 3000 it" in s.plan(0.2, 2) and "≈ 500 it" in s.plan(0.2, 1)
    assert ClockSchedule(60.0, 0.0, 2e-4, 1e-6).at(0, 0.0)[0] == 2


@pytest.mark.parametrize(
    ("text", "seconds"), [("2h30m", 9000), ("90m", 5400), ("1.5h", 5400), ("45s", 45), ("600", 600), ("1d", 86400)]
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "-5m", "2x", "h", "30m2h3", "1h1h", "nan", "inf"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_duration(text)


def test_durations_format() -> None:
    assert [format_duration(x) for x in (12.34, 245, 9000)] == ["12.3s", "4m05s", "2h30m"]


def test_time_budget_config_defaults_and_resume() -> None:
    c = _config(time_budget=3600.0).resolved(torch.device("cpu"))
    assert c.stage1_share == pytest.approx(1 / 7) and c.stage1_iterations is None and c.warmup_iterations is None
    k = _config(arch="kdsr", time_budget=60.0).resolved(torch.device("cpu"))
    assert k.stage1_share == 0.0
    merged = _merge_resumed(_config(), c.to_dict()).resolved(torch.device("cpu"))
    assert (merged.time_budget, merged.stage1_share) == (3600.0, c.stage1_share)
    with pytest.raises(ConfigError, match="time_budget"):
        _merge_resumed(_config(time_budget=60.0), c.to_dict())


def test_resume_takes_the_saved_training_options_and_refuses_conflicts() -> None:
    saved = _config(iterations=40, batch_size=2).resolved(torch.device("cpu")).to_dict()
    merged = _merge_resumed(_config(workers=3), saved)
    assert (merged.iterations, merged.batch_size, merged.stage1_iterations, merged.workers) == (40, 2, 5, 3)
    with pytest.raises(ConfigError, match="iterations=50"):
        _merge_resumed(_config(iterations=50), saved)
    with pytest.raises(ConfigError, match="setting"):
        _merge_resumed(_config(setting=2), saved)


# --------------------------------------------------------------------------- data


def test_training_images_are_found_recursively(tmp_path: Path) -> None:
    (tmp_path / "DIV2K" / "HR").mkdir(parents=True)
    (tmp_path / ".hidden").mkdir()
    for name in ("DIV2K/HR/0001.png", "b.JPG", ".hidden/c.png", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_training_images(tmp_path)] == [
        "DIV2K/HR/0001.png",
        "b.JPG",
    ]
    with pytest.raises(DatasetError):
        list_training_images(tmp_path / "DIV2K" / "nothing")


def test_image_store_skips_small_images_and_caps_its_cache() -> None:
    files = list_training_images(TRAIN)
    store = ImageStore(files, 64, cache_bytes=2 * 96 * 96 * 3, progress=False, root=TRAIN)
    assert len(store) == 4 and store.cached == 2 and store.names()[0] == "abbey_crop.png"
    assert np.array_equal(store.get(3), store.get(3)) and store.get(3).shape == (96, 96, 3)
    with pytest.raises(DatasetError, match="at least 97"):
        ImageStore(files, 97, 0, progress=False)


def test_crops_are_a_pure_function_of_the_sample_id() -> None:
    store = ImageStore(list_training_images(TRAIN), 32, 2**30, progress=False)
    data = CropDataset(store, hr_patch=32, crops=3, setting=2, seed=5)
    crops, params = data[7]
    assert crops.shape == (3, 3, 32, 32) and crops.dtype == torch.uint8
    assert params.shape == (degradation_size(2),)
    l1, l2, theta, noise = params.tolist()
    assert 0.2 <= l1 <= 4 and 0.2 <= l2 <= 4 and 0 <= theta <= math.pi and 0 <= noise <= 25
    again, params_again = CropDataset(store, 32, 3, 2, seed=5)[7]
    assert torch.equal(crops, again) and torch.equal(params, params_again)
    assert not torch.equal(crops, CropDataset(store, 32, 3, 2, seed=6)[7][0])
    # every image is read once per epoch of 4 samples
    first_pixels = {tuple(store.get(i)[0, 0]) for i in range(4)}
    assert len(first_pixels) == 4
    widths = CropDataset(store, 32, 1, 1, seed=0)
    assert all(0.2 <= widths[s][1].item() <= 4.0 for s in range(8))


def test_iteration_batches_split_the_global_batch_between_ranks() -> None:
    assert list(IterationBatches(2, 4, batch=4)) == [[8, 9, 10, 11], [12, 13, 14, 15]]
    ranks = [list(IterationBatches(2, 4, batch=4, rank=r, world=2)) for r in range(2)]
    assert ranks == [[[8, 9], [12, 13]], [[10, 11], [14, 15]]]
    assert len(IterationBatches(5, 3, 2)) == 0
    with pytest.raises(ConfigError):
        IterationBatches(0, 1, batch=3, world=2)


def test_synthesize_applies_the_degradation_model_per_image() -> None:
    g = torch.Generator().manual_seed(0)
    hr = torch.randint(0, 256, (2, 3, 3, 32, 32), generator=g, dtype=torch.uint8)
    params = torch.tensor([[0.7], [3.1]])
    batch = synthesize(hr, params, setting=1, scale=4, device=torch.device("cpu"))
    assert batch.lr.shape == (2, 3, 3, 8, 8) and batch.noise is None
    assert torch.equal(batch.hr, hr.float() / 255)
    for b in range(2):
        expected = D.degrade(hr[b].float(), D.isotropic_kernel(params[b, 0].item()), 4)
        assert torch.allclose(batch.lr[b] * 255, expected, atol=1e-3)
    lr255 = batch.lr * 255
    assert torch.allclose(lr255, lr255.round(), atol=1e-3)
    noisy = synthesize(hr, torch.tensor([[1.0, 2.0, 0.5, 10.0], [2.0, 1.0, 0.0, 0.0]]), 2, 4, torch.device("cpu"), g)
    assert noisy.noise is not None and noisy.kernels.shape == (2, 21, 21)


# --------------------------------------------------------------------------- resume-state files


def test_shards_stay_under_the_payload_and_round_trip(tmp_path: Path) -> None:
    tensors = {f"t{i}": torch.full((256,), float(i)) for i in range(10)}  # 1 KiB each
    names = S.write_shards(tmp_path, "w", tensors, payload=3 * 1024)
    assert len(names) == 4
    back = S.read_shards(tmp_path, names)
    assert list(back) == list(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)
    with pytest.raises(CheckpointError):
        S.write_shards(tmp_path, "big", {"x": torch.zeros(1024)}, payload=1000)


def test_optimizer_state_round_trips_by_parameter_name() -> None:
    def make() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
        return model, torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.99))

    model, opt = make()
    model[1].weight.requires_grad_(False)  # one parameter without state, like a frozen stage
    for _ in range(3):
        model(torch.randn(5, 3)).square().mean().backward()
        opt.step()
        opt.zero_grad()
    names = [n for n, _ in model.named_parameters()]
    tensors, meta = S.optimizer_state_tensors(opt, names)
    assert "0.weight/exp_avg" in tensors and "1.weight/exp_avg" not in tensors
    _, fresh = make()  # the state is restored from meta as the resume state stores it: JSON
    S.load_optimizer_state(fresh, names, tensors, json.loads(json.dumps(meta)))
    a, b = opt.state_dict(), fresh.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for pid, fields in a["state"].items():
        assert all(torch.equal(v, b["state"][pid][f]) for f, v in fields.items())


def test_rng_states_round_trip_through_json() -> None:
    saved = json.loads(json.dumps(S.capture_rng(torch.device("cpu"))))
    draws = (random.random(), np.random.rand(), torch.rand(1).item())
    S.restore_rng(saved, torch.device("cpu"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == draws


def test_write_state_replaces_the_previous_state_atomically(tmp_path: Path) -> None:
    assert S.latest_state_dir(tmp_path) is None
    S.write_state(tmp_path, 3, {"k": 1}, {"w": torch.ones(2)}, {})
    second = S.write_state(tmp_path, 6, {"k": 2}, {"w": torch.zeros(2)}, {})
    assert S.latest_state_dir(tmp_path) == second
    assert [p.name for p in (tmp_path / "state").iterdir() if p.is_dir()] == ["iter-00000006"]
    manifest, model, optimizer = S.read_state(second)
    assert manifest["k"] == 2 and manifest["iteration"] == 6 and torch.equal(model["w"], torch.zeros(2))
    assert optimizer == {}


# --------------------------------------------------------------------------- models


def test_student_starts_from_the_teacher_except_the_first_estimator_conv() -> None:
    torch.manual_seed(0)
    teacher = build_model("lightbsr_teacher_x4_setting1")
    torch.manual_seed(1)
    student = build_model("lightbsr_student_x4")
    first = student.estimator.layers[0].conv.weight.clone()
    kept = init_student_from_teacher(student, teacher)
    assert kept == ["estimator.layers.0.conv.weight", "estimator.layers.0.conv.bias"]
    assert torch.equal(student.estimator.layers[0].conv.weight, first)
    t, s = teacher.state_dict(), student.state_dict()
    assert all(torch.equal(s[k], t[k]) for k in s if k not in kept)
    kdsr = build_model("kdsr_student_m_x4")
    assert init_student_from_teacher(kdsr, build_model("kdsr_teacher_m_x4")) == [
        "estimator.head.weight",
        "estimator.head.bias",
    ]


def test_teacher_objective_momentum_queue_and_stage_parameters() -> None:
    torch.manual_seed(0)
    objective = LightBSRTeacherObjective(build_model("lightbsr_teacher_x4_setting1"), crops=2)
    model = objective.model
    objective.init_key_encoder()
    assert torch.equal(model.key_estimator.layers[0].conv.weight, model.estimator.layers[0].conv.weight)
    stage1 = objective.stage_parameters(1)
    assert stage1 and all(n.startswith(("estimator.", "projector.")) for n in stage1)
    assert not any(n.startswith("key_") for n in objective.stage_parameters(2))
    queue = model.queue.clone()
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(3, 2, 3, 8, 8, generator=g)
    kernels = D.isotropic_kernels(torch.tensor([1.0, 2.0, 3.0]))
    objective.set_stage(1)
    losses = objective(lr, torch.rand(3, 2, 3, 32, 32), kernels, None, 1)
    assert set(losses) == {"loss", "contrast"} and losses["loss"].requires_grad
    assert int(model.queue_ptr) == 3 and torch.equal(model.queue[:, 3:], queue[:, 3:])
    assert not torch.equal(model.queue[:, :3], queue[:, :3])


def test_load_teacher_checks_family_setting_and_scale(tmp_path: Path) -> None:
    from lightbsr.checkpoint import save_checkpoint
    from lightbsr.models import ModelConfig
    from lightbsr.training.trainer import load_teacher

    config = ModelConfig("lightbsr", "teacher", 4, 2)
    path = save_checkpoint(tmp_path / "t.safetensors", build_model(config), config)
    model, loaded, _ = load_teacher(str(path), "lightbsr", 2, 4)
    assert loaded == config and not model.training
    for arch, setting, scale, message in (("kdsr", 2, 4, "not a kdsr teacher"), ("lightbsr", 1, 4, "setting-2")):
        with pytest.raises(CheckpointError, match=message):
            load_teacher(str(path), arch, setting, scale)
    with pytest.raises(CheckpointError, match="neither a resume state"):
        load_teacher(str(tmp_path), "lightbsr", 2, 4)
