"""The training loop: schedule, stages, AMP, DDP, logs, validation, checkpoints and exact resume.

``train(TrainConfig(...))`` runs one teacher or student training of the papers' protocol
(docs/models.md), measured in iterations rather than epochs:

* **Stages.** Iterations ``[0, stage1)`` are stage 1 (estimator pre-training /
  distillation only), the rest stage 2 (whole network). By default ``stage1 =
  iterations // 7``, the papers' 100 : 600 epochs; the KDSR teacher has one stage. The
  authors' "epoch" is about 1000 iterations of batch 64 (EDSR-style ``test_every``), so
  the full protocol is ``--iterations 700000`` (the default).
* **Learning rate.** Adam (β = 0.9, 0.99, as the LightBSR code), 2e-4 in stage 1; in
  stage 2 a linear warm-up over ``warmup`` iterations (default 5/600 of stage 2, the
  papers' 5 epochs) then a cosine from 2e-4 to 1e-6, evaluated per iteration.
* **Data.** A global batch of ``batch_size`` images per iteration (split between DDP
  ranks), ``crops`` HR patches per image sharing one degradation, synthesised on the
  training device (:mod:`lightbsr.training.data`).
* **Precision.** ``amp="bf16"`` autocasts to bfloat16, ``"fp16"`` to float16 with a
  ``GradScaler``; losses are computed in float32.
* **Several GPUs.** Run under ``torchrun``: one process per GPU, the objective wrapped in
  ``torch.nn.parallel.DistributedDataParallel`` (BatchNorm synchronised), MoCo keys
  gathered from every rank before they enter the queue, logging and saving on rank 0.
* **Outputs** in the run folder: ``model.safetensors`` (latest weights, a lightbsr
  checkpoint that ``lightbsr export`` reads), ``best.safetensors`` (best validation
  PSNR), ``log.csv`` / ``val.csv`` (and TensorBoard events when ``tensorboard`` is
  installed), ``config.json``, and the resume state under ``state/``
  (:mod:`lightbsr.training.state`). Every file stays below 16 MiB.
* **Resume.** With ``resume=True`` the run continues from its latest state exactly:
  model, MoCo queue and key encoder, optimizer, GradScaler, global RNG states,
  iteration counter, log window; data and degradations are pure functions of
  ``(seed, iteration)``, so the continued run sees the batches an uninterrupted one
  would. SIGINT/SIGTERM stop the run after the current iteration, with a saved state.
"""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import json
import math
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from lightbsr.checkpoint import read_checkpoint, save_checkpoint
from lightbsr.degradation import kernel_pca
from lightbsr.errors import CheckpointError, ConfigError, LightBSRError
from lightbsr.hardware import available_cpus, describe_machine
from lightbsr.models import LightBSRTeacher, ModelConfig, build_model
from lightbsr.models.convert import load_strict

from . import state as run_state
from .data import CropDataset, ImageStore, IterationBatches, list_training_images, synthesize
from .logs import CsvLog, LossWindow, open_tensorboard, truncate_csv
from .objectives import (
    KDSRStudentObjective,
    KDSRTeacherObjective,
    LightBSRStudentObjective,
    LightBSRTeacherObjective,
    Objective,
    init_student_from_teacher,
)
from .process import StopRequest, iteration_seed, seed_everything, setup_process
from .recipes import (
    KDSRClockSchedule,
    KDSRSchedule,
    Recipe,
    apply_recipe,
    default_recipe,
    kdsr_plan,
    kdsr_values,
    recipe,
    share_degradation,
)
from .schedule import ClockSchedule, Schedule, format_duration
from .validation import Validator

__all__ = ["Schedule", "TrainConfig", "TrainResult", "TrainingError", "load_teacher", "train"]

ADAM_BETAS = (0.9, 0.99)  # LightBSR's recipe; each recipe has its own (training/recipes.py)
ADAM_EPS = 1e-8
CHECKPOINT = "model.safetensors"
BEST = "best.safetensors"
LOG = "log.csv"
VAL_LOG = "val.csv"


class TrainingError(LightBSRError):
    """Training cannot go on: the loss became NaN/inf, or the run folder is in an unusable state."""


# --------------------------------------------------------------------------- configuration


@dataclass
class TrainConfig:
    """Everything a training run depends on. ``None`` fields are filled by :meth:`resolved`."""

    role: str  # "teacher" | "student"
    arch: str  # "lightbsr" | "kdsr"
    setting: int
    data: str
    out: str
    teacher: str | None = None
    init: str | None = None
    scale: int = 4
    iterations: int = 700_000
    stage1_iterations: int | None = None
    warmup_iterations: int | None = None
    time_budget: float | None = None
    stage1_share: float | None = None
    budget_clock: str = "wall"
    batch_size: int = 64
    patch_size: int = 64
    crops: int | None = None
    lr: float = 2e-4
    min_lr: float = 1e-6
    kd_l1_weight: float | None = None
    recipe: str | None = None  # "lightbsr" | "kdsr" (training/recipes.py); None: the family's own
    seed: int = 0
    amp: str = "auto"
    device: str | None = None
    workers: int | None = None
    threads: int | None = None
    cache_mb: int = 4096
    channels_last: bool = True
    val_data: str | None = None
    val_every: int = 5000
    val_images: int = 5
    val_patch: int = 256
    save_every: int = 5000
    log_every: int = 100
    stop_at: int | None = None
    save_dtype: str = "auto"
    deterministic: bool = False
    resume: bool = False
    progress: bool = True

    #: fields that define the training itself; a resumed run takes them from its state
    IDENTITY = (
        "iterations",
        "stage1_iterations",
        "warmup_iterations",
        "time_budget",
        "stage1_share",
        "budget_clock",
        "batch_size",
        "patch_size",
        "crops",
        "lr",
        "min_lr",
        "kd_l1_weight",
        "recipe",
        "seed",
        "amp",
    )

    def resolved(self, device: torch.device) -> TrainConfig:
        """A copy with defaults filled in and every value checked (raises ConfigError)."""
        c = dataclasses.replace(self)
        kdsr_recipe = apply_recipe(c)
        if c.role not in ("teacher", "student"):
            raise ConfigError(f"role must be 'teacher' or 'student', got {c.role!r}")
        if c.arch not in ("lightbsr", "kdsr"):
            raise ConfigError(f"unknown architecture family {c.arch!r}; expected 'lightbsr' or 'kdsr'")
        if c.setting not in (1, 2):
            raise ConfigError(f"setting must be 1 or 2, got {c.setting!r}")
        ModelConfig(c.arch, c.role, c.scale, c.setting)  # type: ignore[arg-type]  # validates the scale
        if c.role == "student" and not c.teacher:
            raise ConfigError("student training needs --teacher (a teacher run folder or checkpoint)")
        if c.role == "teacher" and c.teacher:
            raise ConfigError("--teacher is for student training")
        if c.threads is not None and c.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {c.threads}")
        one_stage = c.arch == "kdsr" and c.role == "teacher"
        if c.iterations < 1:
            raise ConfigError(f"--iterations must be >= 1, got {c.iterations}")
        if c.time_budget is not None:
            fitted = ("stage1_iterations", "warmup_iterations")
            given = [f"--{n.replace('_', '-')}" for n in fitted if getattr(c, n) is not None]
            if c.iterations != TrainConfig.iterations:
                given.insert(0, "--iterations")
            if given:
                raise ConfigError(f"--time-budget fits the schedule to the time: drop {', '.join(given)}")
            if c.stage1_share is None:
                c.stage1_share = 0.0 if one_stage else 1 / 7
            if one_stage and c.stage1_share:
                raise ConfigError("the KDSR teacher trains in one stage: use --stage1-share 0")
            ClockSchedule(c.time_budget, c.stage1_share, c.lr, c.min_lr)  # validates budget and share
        else:
            if c.stage1_share is not None:
                raise ConfigError("--stage1-share goes with --time-budget (else use --stage1-iterations)")
            if c.stage1_iterations is None:
                c.stage1_iterations = 0 if one_stage else c.iterations // 7
            if one_stage and c.stage1_iterations:
                raise ConfigError("the KDSR teacher trains in one stage (L1, no pre-training): --stage1-iterations 0")
            if not 0 <= c.stage1_iterations <= c.iterations:
                raise ConfigError(f"--stage1-iterations must be in [0, {c.iterations}], got {c.stage1_iterations}")
            stage2 = c.iterations - c.stage1_iterations
            if c.warmup_iterations is None:
                c.warmup_iterations = round(stage2 * 5 / 600)
            if not 0 <= c.warmup_iterations <= stage2:
                raise ConfigError(f"--warmup-iterations must be in [0, {stage2}], got {c.warmup_iterations}")
        if c.budget_clock not in ("wall", "cpu"):
            raise ConfigError(f"--budget-clock must be wall or cpu, got {c.budget_clock!r}")
        if c.crops is None:
            c.crops = 4 if (c.arch, c.role) == ("lightbsr", "teacher") else 1
        if (c.arch, c.role) == ("lightbsr", "teacher") and c.crops < 2:
            raise ConfigError("the LightBSR teacher's contrastive loss needs --crops >= 2")
        if c.crops < 1 or c.batch_size < 1:
            raise ConfigError("--crops and --batch-size must be >= 1")
        if c.patch_size < 4:
            raise ConfigError(f"--patch-size (LR) must be >= 4, got {c.patch_size}")
        if c.kd_l1_weight is None:
            c.kd_l1_weight = 0.1 if c.arch == "lightbsr" else 0.0
        if not (0 < c.min_lr <= c.lr):
            raise ConfigError(f"need 0 < --min-lr <= --lr, got {c.min_lr} and {c.lr}")
        if c.seed < 0:
            raise ConfigError(f"--seed must be >= 0, got {c.seed}")
        if c.amp == "auto":
            c.amp = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "off"
        if c.amp not in ("bf16", "fp16", "off"):
            raise ConfigError(f"--amp must be bf16, fp16, off or auto, got {c.amp!r}")
        if c.amp == "fp16" and device.type != "cuda":
            raise ConfigError("--amp fp16 needs a CUDA device (use bf16 or off on the CPU)")
        if c.save_dtype not in ("auto", "fp32", "fp16"):
            raise ConfigError(f"--save-dtype must be auto, fp32 or fp16, got {c.save_dtype!r}")
        for name in ("val_every", "save_every", "val_images", "cache_mb"):
            if getattr(c, name) < 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 0")
        if c.log_every < 1:
            raise ConfigError("--log-every must be >= 1")
        if c.stop_at is not None and not (0 < c.stop_at <= c.iterations or (c.time_budget and c.stop_at > 0)):
            raise ConfigError(f"--stop-at must be in [1, {c.iterations}], got {c.stop_at}")
        if kdsr_recipe:  # the KDSR code's rates and stages (training/recipes.py), in the fields the logs show
            c = dataclasses.replace(c, **kdsr_values(c))
        return c

    def model_config(self) -> ModelConfig:
        return ModelConfig(self.arch, self.role, self.scale, self.setting)  # type: ignore[arg-type]

    @property
    def training_recipe(self) -> Recipe:
        return recipe(self.recipe or default_recipe(self.arch), self.arch)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class TrainResult:
    """How a call to :func:`train` ended."""

    run: Path
    iteration: int
    #: planned iterations (None under a time budget)
    iterations: int | None
    finished: bool
    interrupted: bool = False
    last_losses: dict[str, float] = field(default_factory=dict)
    best_psnr: float | None = None
    checkpoint: Path | None = None
    #: training time of the run so far (seconds), and its budget if it has one
    elapsed: float = 0.0
    time_budget: float | None = None


# --------------------------------------------------------------------------- teachers


def _state_sha256(state: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_run_weights(spec: str) -> tuple[dict[str, torch.Tensor], ModelConfig, str]:
    """The weights of a run folder (its latest full-precision resume state, else its ``model.safetensors``)
    or of a lightbsr checkpoint file: (weights, model config, a description of where they came from)."""
    path = Path(spec)
    if not path.is_dir():
        weights, config, _ = read_checkpoint(path)
        return weights, config, str(path)
    folder = run_state.latest_state_dir(path)
    if folder is not None:
        manifest = run_state.read_manifest(folder)
        weights = run_state.read_shards(folder, manifest["files"]["model"])
        saved = manifest["config"]
        of = f"a {format_duration(saved['time_budget'])} budget" if saved.get("time_budget") else saved["iterations"]
        source = f"{folder} (iteration {manifest['iteration']} of {of})"
        return weights, ModelConfig.from_dict(manifest["model_config"]), source
    if (path / CHECKPOINT).is_file():
        weights, config, _ = read_checkpoint(path / CHECKPOINT)
        return weights, config, str(path / CHECKPOINT)
    raise CheckpointError(f"{path}: neither a resume state nor {CHECKPOINT} in this run folder")


def _load_run_model(spec: str, role: str, arch: str, setting: int, scale: int) -> tuple[nn.Module, ModelConfig, str]:
    """:func:`read_run_weights` loaded strictly into a new model, refused unless it is a ``role`` of ``arch``."""
    weights, config, source = read_run_weights(spec)
    if config.role != role or config.family != arch:
        raise CheckpointError(f"{source} holds a {config.arch} model, not a {arch} {role}")
    if config.scale != scale:
        raise CheckpointError(f"{source} is a ×{config.scale} {role}, not ×{scale}")
    if config.setting is not None and config.setting != setting:
        raise CheckpointError(f"{source} is a setting-{config.setting} {role}, not setting {setting}")
    model = build_model(config)
    try:
        load_strict(model, weights)
    except CheckpointError as err:
        raise CheckpointError(f"{source}: {err}") from err
    return model, config, source


def load_teacher(spec: str, arch: str, setting: int, scale: int) -> tuple[nn.Module, ModelConfig, str]:
    """Load a trained teacher for student training: (model in eval mode, its config, a description).

    ``spec`` is a teacher run folder (its latest full-precision resume state, else its
    ``model.safetensors``) or a lightbsr checkpoint file.
    """
    model, config, source = _load_run_model(spec, "teacher", arch, setting, scale)
    return model.eval(), config, source


# --------------------------------------------------------------------------- the trainer


def _build_objective(config: TrainConfig, teacher: nn.Module | None) -> Objective:
    model = build_model(config.model_config())
    assert config.crops is not None and config.kd_l1_weight is not None
    if config.role == "teacher":
        if isinstance(model, LightBSRTeacher):
            return LightBSRTeacherObjective(model, crops=config.crops)
        return KDSRTeacherObjective(model)
    assert teacher is not None
    if config.arch == "lightbsr":
        return LightBSRStudentObjective(model, teacher, channel_l1_weight=config.kd_l1_weight)  # type: ignore[arg-type]
    return KDSRStudentObjective(model, teacher, feature_l1_weight=config.kd_l1_weight)  # type: ignore[arg-type]


def _loss_names(objective: Objective) -> list[str]:
    names = {
        LightBSRTeacherObjective: ["loss", "l1", "contrast"],
        LightBSRStudentObjective: ["loss", "l1", "kd", "kd_spatial_mse", "kd_channel_kl", "kd_channel_l1"],
        KDSRTeacherObjective: ["loss", "l1"],
        KDSRStudentObjective: ["loss", "l1", "kd", "kd_kl", "kd_l1"],
    }
    return names[type(objective)]


def _checkpoint_dtype(model: nn.Module, choice: str) -> torch.dtype:
    """float32, unless ``choice`` says fp16, or it is ``auto`` and float32 weights would not fit in one file."""
    if choice == "fp16":
        return torch.float16
    if choice == "fp32":
        return torch.float32
    state = model.state_dict().values()
    fp32_bytes = sum(t.numel() * (4 if t.is_floating_point() else t.element_size()) for t in state)
    return torch.float32 if fp32_bytes < run_state.SHARD_PAYLOAD_BYTES else torch.float16


class Trainer:
    """One training run; see the module docstring. Use :func:`train`."""

    def __init__(self, config: TrainConfig) -> None:
        self.process = setup_process(config.device)
        device = self.process.device
        if device.type == "cpu":
            torch.set_num_threads(config.threads or max(1, available_cpus() // self.process.world))
        elif config.threads:
            torch.set_num_threads(config.threads)
        if config.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        elif device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        self.run = Path(config.out)
        folder = run_state.latest_state_dir(self.run) if self.run.exists() else None
        if folder is not None and not config.resume:
            raise TrainingError(f"{self.run} already holds a training state: pass --resume to continue it")
        self.manifest: dict[str, Any] | None = None
        self.saved_model: dict[str, torch.Tensor] = {}
        self.saved_optimizer: dict[str, torch.Tensor] = {}
        if folder is not None:
            self.manifest, self.saved_model, self.saved_optimizer = run_state.read_state(folder)
            config = _merge_resumed(config, self.manifest["config"])
        self.config = config = config.resolved(device)
        self.schedule: Schedule | ClockSchedule | KDSRSchedule
        kdsr = kdsr_plan(config.role, config.setting) if config.recipe == "kdsr" else None
        if config.time_budget is not None:
            assert config.stage1_share is not None
            if kdsr is not None:
                self.schedule = KDSRClockSchedule(
                    config.time_budget, config.stage1_share, config.lr, config.min_lr, step_plan=kdsr
                )
            else:
                self.schedule = ClockSchedule(config.time_budget, config.stage1_share, config.lr, config.min_lr)
            self.stop = config.stop_at or sys.maxsize
        else:
            assert config.stage1_iterations is not None and config.warmup_iterations is not None
            self.schedule = (
                KDSRSchedule(config.iterations, kdsr)
                if kdsr is not None
                else Schedule(
                    config.iterations, config.stage1_iterations, config.warmup_iterations, config.lr, config.min_lr
                )
            )
            self.stop = config.stop_at or config.iterations
        #: training time spent so far (seconds, all sessions of the run): the clock of a time budget
        self.elapsed = 0.0

    # ---- building

    def _log(self, message: str) -> None:
        if self.process.main and self.config.progress:
            tqdm.write(message, file=sys.stderr)

    def build(self) -> None:
        config, process = self.config, self.process
        seed_everything(config.seed)
        self.teacher_info: dict[str, str] | None = None
        teacher = None
        if config.role == "student":
            assert config.teacher is not None
            teacher, _, source = load_teacher(config.teacher, config.arch, config.setting, config.scale)
            self.teacher_info = {"source": source, "sha256": _state_sha256(teacher.state_dict())}
            self._log(f"teacher: {source}")
        objective = _build_objective(config, teacher)
        if self.manifest is None:
            self._fresh_start(objective, teacher)
        objective.to(process.device)
        if config.channels_last:
            objective.to(memory_format=torch.channels_last)
        if process.distributed and process.device.type == "cuda":
            objective = nn.SyncBatchNorm.convert_sync_batchnorm(objective)
        self.objective = objective
        self.param_names = list(objective.trainable)
        params = dict(objective.model.named_parameters())
        self.optimizer = torch.optim.Adam(
            [params[n] for n in self.param_names], lr=config.lr, betas=config.training_recipe.adam_betas, eps=ADAM_EPS
        )
        self.scaler = torch.amp.GradScaler(process.device.type, enabled=config.amp == "fp16")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        self.window = LossWindow(_loss_names(objective), process.device)
        self.iteration = 0
        self.best: dict[str, Any] | None = None
        self._build_data()
        if self.manifest is not None:
            self._restore()
        self.validator = None
        if config.val_data and config.val_every and process.main:
            self.validator = Validator(
                config.val_data, config.setting, config.scale, process.device, config.val_images, config.val_patch
            )
        self.ddp: nn.Module | None = None

    def _fresh_start(self, objective: Objective, teacher: nn.Module | None) -> None:
        model = objective.model
        config = self.config
        if config.init:
            start, _, source = _load_run_model(config.init, config.role, config.arch, config.setting, config.scale)
            model.load_state_dict(start.state_dict())  # every tensor, MoCo key encoder and queue included
            self._log(f"init: weights from {source}")
            return
        if isinstance(objective, LightBSRTeacherObjective):
            assert isinstance(model, LightBSRTeacher)
            cast(torch.Tensor, model.pca_basis).copy_(kernel_pca())
            objective.init_key_encoder()
        if teacher is not None:
            init_student_from_teacher(model, teacher, estimator=config.training_recipe.student_estimator_from_teacher)

    def _build_data(self) -> None:
        config, process = self.config, self.process
        hr_patch = config.patch_size * config.scale
        root = Path(config.data)
        self.store = ImageStore(
            list_training_images(root),
            hr_patch,
            config.cache_mb * 2**20,
            progress=config.progress and process.main,
            root=root,
        )
        if self.store.skipped:
            self._log(f"skipped {len(self.store.skipped)} image(s) smaller than the {hr_patch}px HR patch")
        self._log(
            f"data: {len(self.store)} images under {root}, {self.store.cached} cached "
            f"({self.store.cached_bytes / 2**20:.0f} MiB)"
        )
        self.dataset = CropDataset(self.store, hr_patch, config.crops or 1, config.setting, config.seed)
        if config.batch_size % process.world:
            raise ConfigError(f"--batch-size {config.batch_size} is not divisible by the {process.world} processes")

    def _restore(self) -> None:
        manifest = self.manifest
        assert manifest is not None
        if manifest["data"]["images"] != self.store.names():
            raise CheckpointError(
                f"the training images under {self.config.data} differ from those the run was started with"
            )
        if self.teacher_info and manifest.get("teacher", {}).get("sha256") != self.teacher_info["sha256"]:
            raise CheckpointError("--teacher holds other weights than the teacher this student run was started with")
        try:
            load_strict(self.objective.model, self.saved_model)
        except CheckpointError as err:
            raise CheckpointError(f"resume state of {self.run}: {err}") from err
        run_state.load_optimizer_state(self.optimizer, self.param_names, self.saved_optimizer, manifest["optimizer"])
        if manifest.get("scaler"):
            self.scaler.load_state_dict(manifest["scaler"])
        rng = manifest.get("rng", [])
        if len(rng) == self.process.world:
            run_state.restore_rng(rng[self.process.rank], self.process.device)
        else:
            self._log(f"resume: the run had {len(rng)} processes, now {self.process.world}: RNG states not restored")
        self.window.load(manifest["window"])
        self.iteration = int(manifest["iteration"])
        self.elapsed = float(manifest.get("elapsed", 0.0))
        self.best = manifest.get("best")
        self.saved_model, self.saved_optimizer = {}, {}
        if self.config.channels_last:  # the saved moments are contiguous; keep them in their parameters' layout
            for param_state in self.optimizer.state.values():
                for key, value in param_state.items():
                    if isinstance(value, torch.Tensor) and value.dim() == 4:
                        param_state[key] = value.contiguous(memory_format=torch.channels_last)
        self._log(f"resumed {self.run} at iteration {self.iteration}")

    # ---- stages and steps

    def _enter_stage(self, stage: int) -> None:
        self.objective.set_stage(stage)
        self.objective.train()
        if self.process.distributed:
            self.ddp = None
            gc.collect()
            device_ids = [self.process.device.index] if self.process.device.type == "cuda" else None
            self.ddp = nn.parallel.DistributedDataParallel(self.objective, device_ids=device_ids)
        self.stage = stage

    def _loader(self) -> DataLoader:
        config, process = self.config, self.process
        workers = config.workers
        if workers is None:
            workers = 0 if process.device.type == "cpu" else min(8, max(1, (os.cpu_count() or 2) // process.world))
        return DataLoader(
            self.dataset,
            batch_sampler=IterationBatches(self.iteration, self.stop, config.batch_size, process.rank, process.world),
            num_workers=workers,
            pin_memory=process.device.type == "cuda",
            prefetch_factor=4 if workers else None,
            persistent_workers=False,
        )

    def _step(self, crops: torch.Tensor, params: torch.Tensor, lr: float) -> dict[str, torch.Tensor]:
        config, device = self.config, self.process.device
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        generator = None
        if config.setting == 2:
            generator = torch.Generator(device).manual_seed(
                iteration_seed(config.seed, self.iteration, self.process.rank)
            )
        if config.training_recipe.per_batch_degradation:
            params = share_degradation(params)
        batch = synthesize(crops, params, config.setting, config.scale, device, generator)
        autocast = torch.autocast(device.type, dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()
        module = self.ddp if self.ddp is not None else self.objective
        with autocast:
            losses = module(batch.lr, batch.hr, batch.kernels, batch.noise, self.stage)
        self.scaler.scale(losses["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        return losses

    # ---- outputs

    def _save_checkpoint(self, path: Path) -> None:
        model = self.objective.model
        info = {"iteration": self.iteration, "iterations": self.config.iterations, "role": self.config.role}
        save_checkpoint(
            path,
            model,
            self.config.model_config(),
            dtype=_checkpoint_dtype(model, self.config.save_dtype),
            metadata={"lightbsr.training": json.dumps(info)},
        )

    def _save_state(self) -> None:
        rng = run_state.capture_rng(self.process.device)
        if self.process.distributed:
            gathered: list[Any] = [None] * self.process.world
            dist.all_gather_object(gathered, rng)
        else:
            gathered = [rng]
        if not self.process.main:
            return
        self._save_checkpoint(self.run / CHECKPOINT)
        optimizer_tensors, optimizer_meta = run_state.optimizer_state_tensors(self.optimizer, self.param_names)
        manifest = {
            "config": self.config.to_dict(),
            "model_config": self.config.model_config().to_dict(),
            "optimizer": optimizer_meta,
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": gathered,
            "window": self.window.to_dict(),
            "best": self.best,
            "data": {"images": self.store.names()},
            "teacher": self.teacher_info,
            "world_size": self.process.world,
            "torch": torch.__version__,
            "elapsed": self.elapsed,
        }
        run_state.write_state(self.run, self.iteration, manifest, self.objective.model.state_dict(), optimizer_tensors)

    def _write_log_row(self) -> dict[str, Any]:
        means = self.window.means(self.process.world)
        elapsed = time.perf_counter() - self.window.started
        speed = self.window.session_iterations / elapsed if elapsed > 0 else 0.0
        row = {
            "iteration": self.iteration,
            "stage": self.stage,
            "lr": self.lr,
            **means,
            "it_per_s": round(speed, 4),
            "img_per_s": round(speed * self.config.batch_size, 2),
            "elapsed_s": round(self.elapsed, 3),
        }
        if self.log is not None:
            self.log.write(row)
            if self.tensorboard is not None:
                for name, value in means.items():
                    self.tensorboard.add_scalar(f"train/{name}", value, self.iteration)
                self.tensorboard.add_scalar("train/lr", row["lr"], self.iteration)
        if not all(math.isfinite(v) for v in means.values()):
            raise TrainingError(f"the loss is not finite at iteration {self.iteration}: {means}")
        self.window.reset()
        return row

    def _validate(self) -> None:
        assert self.validator is not None
        psnr = self.validator(self.objective)
        improved = self.best is None or psnr > self.best["psnr"]
        if improved:
            self.best = {"psnr": psnr, "iteration": self.iteration}
            self._save_checkpoint(self.run / BEST)
        if self.val_log is not None:
            self.val_log.write({"iteration": self.iteration, "psnr": round(psnr, 4), "best": int(improved)})
        if self.tensorboard is not None:
            self.tensorboard.add_scalar("val/psnr", psnr, self.iteration)
        self._log(f"iteration {self.iteration}: validation Y-PSNR {psnr:.3f} dB{' (best)' if improved else ''}")

    # ---- the loop

    def _now(self) -> float:
        """The budget's clock: wall time, or this process's CPU time per thread (``--budget-clock cpu``)."""
        if self.config.budget_clock == "cpu":
            return time.process_time() / max(1, torch.get_num_threads())
        return time.perf_counter()

    def _clock(self, origin: float) -> float:
        """Training time of the run so far; under DDP with a time budget, rank 0's (every rank must agree)."""
        elapsed = self._now() - origin
        if self.process.distributed and isinstance(self.schedule, ClockSchedule):
            value = torch.tensor([elapsed], dtype=torch.float64, device=self.process.device)
            dist.broadcast(value, src=0)
            elapsed = float(value.item())
        return elapsed

    def run_loop(self) -> TrainResult:
        config, process = self.config, self.process
        self.run.mkdir(parents=True, exist_ok=True)
        header = ["iteration", "stage", "lr", *self.window.names, "it_per_s", "img_per_s", "elapsed_s"]
        if process.main:
            for name in (LOG, VAL_LOG):
                if self.manifest is None:
                    (self.run / name).unlink(missing_ok=True)
                else:
                    truncate_csv(self.run / name, self.iteration)
            run_state.write_json(self.run / "config.json", config.to_dict())
            sessions_file = self.run / "sessions.json"
            sessions = json.loads(sessions_file.read_text()) if sessions_file.is_file() else []
            sessions.append(
                {
                    "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "iteration": self.iteration,
                    "processes": process.world,
                    "machine": describe_machine(str(process.device)),
                }
            )
            run_state.write_json(sessions_file, sessions)
        self.log = CsvLog(self.run / LOG, header) if process.main else None
        self.val_log = None
        if self.validator is not None:
            self.val_log = CsvLog(self.run / VAL_LOG, ["iteration", "psnr", "best"])
        self.tensorboard = open_tensorboard(self.run / "tensorboard", self.iteration) if process.main else None
        last: dict[str, float] = {}
        interrupted = False
        clock = isinstance(self.schedule, ClockSchedule)
        bar = tqdm(
            total=round(self.schedule.budget) if isinstance(self.schedule, ClockSchedule) else self.stop,
            initial=round(self.elapsed) if clock else self.iteration,
            desc=f"train {config.arch} {config.role}",
            unit="s" if clock else "it",
            dynamic_ncols=True,
            disable=not (config.progress and process.main),
        )
        self.stage, self.lr = 0, config.lr
        entered_at = self.iteration
        probe_started = 0.0
        origin = self._now() - self.elapsed
        finished = self.schedule.done(self.iteration, self.elapsed)
        stopper = StopRequest()
        try:
            with stopper.installed():
                batches = iter(self._loader())
                while not finished and self.iteration < self.stop:
                    stage, self.lr = self.schedule.at(self.iteration, self._clock(origin))
                    if stage != self.stage:
                        self._enter_stage(stage)
                        entered_at = self.iteration
                    try:
                        crops, params = next(batches)
                    except RuntimeError:
                        if not stopper.requested:  # loader workers also receive a terminal's SIGINT
                            raise
                        self._save_state()
                        interrupted = True
                        break
                    losses = self._step(crops, params, self.lr)
                    self.window.add(losses)
                    self.iteration += 1
                    before, self.elapsed = self.elapsed, self._clock(origin)
                    bar.update(round(self.elapsed) - round(before) if clock else 1)
                    i = self.iteration
                    finished = self.schedule.done(i, self.elapsed)
                    stage_ends = finished or self.schedule.at(i, self.elapsed)[0] != stage
                    if clock:  # say what the budget buys, from the speed of this stage's iterations 2-4
                        if i - entered_at == 1:
                            probe_started = self.elapsed
                        elif i - entered_at == 4:
                            self._log(f"time budget: {self.schedule.plan((self.elapsed - probe_started) / 3, stage)}")  # type: ignore[union-attr]
                    if i % config.log_every == 0 or stage_ends:
                        row = self._write_log_row()
                        last = {k: v for k, v in row.items() if k in self.window.names}
                        bar.set_postfix(
                            it=i, stage=stage, loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.2e}", img_s=row["img_per_s"]
                        )
                    if self.validator is not None and (i % config.val_every == 0 or finished):
                        self._validate()
                    stop = self._stop_requested(stopper)
                    if stop or finished or i == self.stop or (config.save_every and i % config.save_every == 0):
                        self._save_state()
                    if stop:
                        interrupted = True
                        break
        finally:
            bar.close()
            for handle in (self.log, self.val_log):
                if handle is not None:
                    handle.close()
            if self.tensorboard is not None:
                self.tensorboard.close()
        if not last and self.window.counts.get("loss"):
            last = self.window.means()
        return TrainResult(
            run=self.run,
            iteration=self.iteration,
            iterations=None if clock else config.iterations,
            finished=finished,
            interrupted=interrupted,
            last_losses=last,
            best_psnr=self.best["psnr"] if self.best else None,
            checkpoint=self.run / CHECKPOINT,
            elapsed=self.elapsed,
            time_budget=config.time_budget,
        )

    def _stop_requested(self, stopper: StopRequest) -> bool:
        if not self.process.distributed:
            return stopper.requested
        flag = torch.tensor([int(stopper.requested)], device=self.process.device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


def _merge_resumed(given: TrainConfig, saved: dict[str, Any]) -> TrainConfig:
    """The configuration of a resumed run: the saved training fields, the given runtime fields.

    A training field given with a non-default value that differs from the saved one is an error.
    """
    saved = {"recipe": "lightbsr", **saved}  # runs saved before recipes existed trained with LightBSR's
    for name in ("role", "arch", "setting", "scale"):
        if getattr(given, name) != saved[name]:
            given_value = getattr(given, name)
            raise ConfigError(f"--resume: this run was started with {name}={saved[name]!r}, not {given_value!r}")
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    conflicts = [
        f"{name}={getattr(given, name)!r} (run: {saved[name]!r})"
        for name in TrainConfig.IDENTITY
        if getattr(given, name) != defaults[name] and getattr(given, name) != saved[name]
    ]
    if conflicts:
        raise ConfigError(f"--resume: options differ from the run being resumed: {', '.join(conflicts)}")
    return dataclasses.replace(given, **{name: saved[name] for name in TrainConfig.IDENTITY})


def train(config: TrainConfig) -> TrainResult:
    """Run (or resume) one training; returns where it stopped. See the module docstring."""
    trainer = Trainer(config)
    try:
        trainer.build()
        return trainer.run_loop()
    finally:
        if trainer.process.distributed and dist.is_initialized():
            dist.destroy_process_group()
