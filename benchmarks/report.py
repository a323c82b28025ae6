"""The bench report: one JSON document, rendered as Markdown tables and a PNG figure.

Document (``schema: lightbsr.bench/1``)::

    model, arch, weights        what was measured
    environment                 CPU/GPU name, ISA flags, thread count, wait policy, library versions
    settings                    sizes, batches, warm-up, repeats, image used for accuracy
    complexity                  [{params, macs, flops, height, width, ...}] (lightbsr.benchmarks.complexity)
    roofline                    {vnni, peaks: [GEMM peaks]} (lightbsr.benchmarks.roofline)
    latency                     {reference, rows: [...]} (lightbsr.benchmarks.latency.Row; GFLOP/s, % of peak)
    ort_profile                 [ONNX Runtime kernel time by op type] (lightbsr.benchmarks.ort_profile)
    tiling                      {size, rows} (lightbsr.benchmarks.tiling_throughput)
    contention                  {size, load, rows} (lightbsr.benchmarks.contention)
    quality                     [`lightbsr eval --json` documents]
    notes                       free text (e.g. "reference weights, not trained")
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightbsr.errors import BackendUnavailableError, ConfigError
from lightbsr.files import atomic_output

SCHEMA = "lightbsr.bench/1"
EVAL_SCHEMA = "lightbsr.eval-summary/1"


def load_eval_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a ``lightbsr eval --json`` document (checked)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"{path}: not JSON ({err})") from err
    if not isinstance(data, dict) or data.get("schema") != EVAL_SCHEMA:
        raise ConfigError(f"{path}: not a `lightbsr eval --json` document (schema {EVAL_SCHEMA})")
    return data


def write_json(document: dict[str, Any], path: str | os.PathLike[str]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(document, indent=1) + "\n")


def write_markdown(document: dict[str, Any], path: str | os.PathLike[str]) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(markdown(document))


def markdown(document: dict[str, Any]) -> str:
    """The report as Markdown: environment, complexity, latency/accuracy, skipped targets, quality."""
    title = f"lightbsr bench: {document['model']}" if document.get("model") else "lightbsr bench report"
    env = document.get("environment") or {}
    if env.get("device") == "cpu" and env.get("cpu"):
        title += f" on {machine_title(env)}"
    lines = [f"# {title}", ""]
    if document.get("weights"):
        lines += [f"Weights: {document['weights']}", ""]
    lines += [f"- {note}" for note in document.get("notes", [])]
    if document.get("notes"):
        lines.append("")
    if env:
        lines += ["## Environment", "", "| | |", "|---|---|"]
        lines += [f"| {key} | {_cell(value)} |" for key, value in env.items()]
        lines.append("")
    if document.get("complexity"):
        lines += [
            "## Complexity",
            "",
            "MACs = multiply-accumulates (the papers' 'GFLOPs'); FLOPs = 2 × MACs.",
            "",
            "| model | LR size | batch | params | GMACs | GFLOPs | counted with |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in document["complexity"]:
            lines.append(
                f"| {c['model']} | {c['height']}×{c['width']} | {c['batch']} | {c['params']:,} | "
                f"{c['macs'] / 1e9:.2f} | {c['flops'] / 1e9:.2f} | {c['counter']} |"
            )
        lines.append("")
    if document.get("roofline"):
        lines += _roofline_markdown(document["roofline"])
    latency = document.get("latency")
    if latency:
        lines += _latency_markdown(latency)
    if document.get("ort_profile"):
        lines += _profile_markdown(document["ort_profile"])
    if document.get("tiling"):
        lines += _tiling_markdown(document["tiling"])
    if document.get("contention"):
        lines += _contention_markdown(document["contention"])
    if document.get("quality"):
        lines += _quality_markdown(document["quality"])
    return "\n".join(lines).rstrip() + "\n"


SHOWN_FLAGS = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "VNNI", "avx_vnni": "AVX-VNNI",
               "avx512_bf16": "BF16", "amx_tile": "AMX"}  # fmt: skip


def machine_title(env: dict[str, Any]) -> str:
    """``AMD EPYC, 2 CPUs: AVX2 (no AVX-512, VNNI, BF16, AMX)``: the CPU, its usable CPUs and the ISA that matters."""
    isa = set(env.get("cpu_isa") or [])
    has = [name for flag, name in SHOWN_FLAGS.items() if flag in isa]
    missing = [name for flag, name in SHOWN_FLAGS.items() if flag not in isa and flag != "avx_vnni"]
    if "avx_vnni" in isa:
        missing = [m for m in missing if m != "VNNI"]
    cpus = env.get("usable_cpus") or env.get("cpu_count")
    text = f"{env['cpu']}, {cpus} CPUs: " + (" ".join(has) or "no AVX2")
    return text + (f" (no {', '.join(missing)})" if missing else "")


def _roofline_markdown(roofline: dict[str, Any]) -> list[str]:
    lines = [
        "## Roofline: the machine's measured peak",
        "",
        f"Large GEMMs ({roofline['gemm_size']}³, {roofline['threads']} threads, best of 5 after a warm-up), measured "
        f"in this run; INT8 dot-product instructions (VNNI): {'yes' if roofline.get('vnni') else 'no'}. The FP32 peak "
        "is the faster FP32 GEMM; the INT8 peak is the uint8 × int8 one (the kernels of `--target cpu` INT8).",
        "",
        "| GEMM | library | precision | best ms | G(FL)OP/s |",
        "|---|---|---|---|---|",
    ]
    for p in roofline["peaks"]:
        lines.append(f"| {p['name']} | {p['library']} | {p['precision']} | {p['best_ms']:.1f} | {p['gops']:.1f} |")
    lines.append("")
    return lines


def _profile_markdown(profiles: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "## Where ONNX Runtime's time goes",
        "",
        "Kernel time by operator type (ONNX Runtime's profiler; its per-node timing adds overhead, so read the "
        "shares), each graph as optimised for this machine.",
        "",
    ]
    for prof in profiles:
        lines += [
            f"**{Path(prof['model']).name}** at {prof['height']}×{prof['width']} "
            f"({prof['total_ms_per_run']:.0f} ms of kernels per run):",
            "",
            "| op | ms/run | share | nodes |",
            "|---|---|---|---|",
        ]
        lines += [f"| {o['op']} | {o['ms_per_run']:.1f} | {o['share_pct']:.1f}% | {o['nodes']} |" for o in prof["ops"]]
        lines.append("")
    return lines


def _tiling_markdown(tiling: dict[str, Any]) -> list[str]:
    size = tiling["size"]
    lines = [
        f"## Tiling throughput ({size}×{size} LR)",
        "",
        "Whole image vs tiles, same run. Blend tiles are balanced (as many tiles as the tile asked for, spread "
        "evenly); work = LR pixels the tiles cover / image pixels, for the balanced plan and the plain one.",
        "",
        "| backend | tiling | tile | tile used | tiles | runs | median s | out MP/s | % of untiled | work | "
        "work (plain plan) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in tiling["rows"]:
        if r.get("error"):
            lines.append(f"| {r['backend']} | {r['tiling']} | {_cell(r['tile'])} | failed: {r['error']} |||||||||")
            continue
        lines.append(
            f"| {r['backend']} | {r['tiling']} | {_cell(r['tile'])} | {_cell(r['tile_used'])} | {r['tiles']} | "
            f"{r['runs']} | {r['median_s']:.2f} | {r['output_mp_per_s']:.3f} | {_pct(r['pct_of_untiled'])} | "
            f"{_cell(r['work'])} | {_cell(r['work_plain_plan'])} |"
        )
    lines.append("")
    return lines


def _contention_markdown(contention: dict[str, Any]) -> list[str]:
    size = contention["size"]
    lines = [
        f"## Under load ({size}×{size} LR upscale)",
        "",
        f"Each case in a fresh process, alone and beside {contention['load']}. Slowdown = loaded median / idle "
        "median. torch policies: passive = OMP_WAIT_POLICY=PASSIVE (lightbsr's default), default = libgomp's "
        "own (spins, then sleeps); ONNX Runtime: sleep (lightbsr's default) or spin (ONNX Runtime's default).",
        "",
        "| case | idle ms | loaded ms | slowdown | runs (idle/loaded) |",
        "|---|---|---|---|---|",
    ]
    for r in contention["rows"]:
        if r.get("error"):
            lines.append(f"| {r['case']} | failed: {r['error']} ||||")
            continue
        lines.append(
            f"| {r['case']} | {r['idle_ms']:.0f} | {r['loaded_ms']:.0f} | {r['slowdown']:.2f}× | "
            f"{r['idle_runs']}/{r['loaded_runs']} |"
        )
    lines.append("")
    return lines


def _pct(value: Any) -> str:
    return "–" if value is None else f"{value:.1f}%"


def _latency_markdown(latency: dict[str, Any]) -> list[str]:
    rows = latency["rows"]
    ok = [r for r in rows if r["status"] == "ok"]
    settings = latency.get("settings", {})
    lines = [
        "## Latency, throughput, memory and accuracy",
        "",
        f"Reference: **{latency['reference']}** (PyTorch FP32 eager), measured in the same run. "
        f"Times: {settings.get('timer', '')}; warm-up {settings.get('warmup')} runs, then up to "
        f"{settings.get('repeats')} timed runs. MP/s = **output** megapixels per second at the median. "
        "Speed-up = reference median / median at the same size and batch. PSNR (dB, RGB, peak 1) of the "
        f"target's clamped output vs the reference's, batch 1, on a real image crop ({settings.get('image', '')}).",
        "",
        "| LR size | batch | target | precision | device | median ms | p90 ms | p99 ms | runs | out MP/s | "
        "GFLOP/s | % of peak | peak MB | speed-up | PSNR vs ref |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ok:
        lines.append(
            f"| {r['height']}×{r['width']} | {r['batch']} | {r['target']} | {r['precision']} | {r['device']} | "
            f"{r['median_ms']:.1f} | {r['p90_ms']:.1f} | {r['p99_ms']:.1f} | {r['runs']} | "
            f"{r['output_mp_per_s']:.3f} | {_cell(r.get('gflop_per_s'))} | {_pct(r.get('pct_of_peak'))} | "
            f"{_cell(r['peak_memory_mb'])} | {_speedup(r['speedup'])} | {_cell(r['psnr_vs_reference_db'])} |"
        )
    if any(r.get("gflop_per_s") for r in ok):
        lines += [
            "",
            "GFLOP/s = 2 × the model's multiply-accumulates (all of them, whichever precision each layer runs in) / "
            "median. % of peak: of the measured GEMM peak of the row's precision (INT8 rows: the uint8 × int8 GEMM).",
        ]
    methods = sorted({r["memory_method"] for r in ok if r["memory_method"]})
    if methods:
        lines += ["", "Peak memory: " + "; ".join(methods) + "."]
    best = best_batches(rows)
    if len({r["batch"] for r in ok}) > 1 and best:
        lines += ["", "Best batch (highest output MP/s) per target and size:", ""]
        lines += [f"- {k}: batch {b['batch']}, {b['output_mp_per_s']:.3f} MP/s" for k, b in best.items()]
    others = {(r["target"], r["status"], r["reason"]) for r in rows if r["status"] != "ok"}
    if others:
        lines += ["", "Not measured:", ""]
        lines += [f"- {name}: {status} ({reason})" for name, status, reason in sorted(others)]
    lines.append("")
    return lines


def best_batches(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per ``target @ HxW``: the row with the highest output MP/s over the measured batches."""
    best: dict[str, dict[str, Any]] = {}
    for r in rows:
        if r["status"] != "ok":
            continue
        key = f"{r['target']} @ {r['height']}×{r['width']}"
        if key not in best or r["output_mp_per_s"] > best[key]["output_mp_per_s"]:
            best[key] = r
    return best


def _quality_markdown(documents: Sequence[dict[str, Any]]) -> list[str]:
    """One table: a row per model × dataset, a column per kernel width σ (union over the documents)."""
    sigmas = list(dict.fromkeys(float(s) for q in documents for s in q["sigmas"]))
    protocols = sorted({f"setting {q['setting']}, ×{q['scale']}" for q in documents})
    lines = [
        "## Quality",
        "",
        f"`lightbsr eval` (papers' protocol: {'; '.join(protocols)}): mean Y-PSNR (dB) / SSIM.",
        "",
        "| model | method | dataset | images | " + " | ".join(f"σ={s:g}" for s in sigmas) + " |",
        "|---|---|---|---|" + "---|" * len(sigmas),
    ]
    for q in documents:
        for d in q["datasets"]:
            cells = []
            for sigma in sigmas:
                score = _at_sigma(d["mean"], sigma)
                cells.append(f"{_num(score.get('psnr'), 2)} / {_num(score.get('ssim'), 4)}" if score else "–")
            lines.append(
                f"| {q['model']} | {q.get('method', '')} | {d['name']} | {d['images']} | " + " | ".join(cells) + " |"
            )
    lines.append("")
    return lines


def _at_sigma(means: dict[str, Any], sigma: float) -> dict[str, Any]:
    for key, value in means.items():
        try:
            if abs(float(key) - sigma) < 1e-9:
                return dict(value)
        except ValueError:
            continue
    return {}


def plot(document: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Output MP/s per target and size (left) and PSNR vs the reference (right), as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise BackendUnavailableError("--plot needs matplotlib: pip install 'lightbsr[bench]'") from err
    latency = document.get("latency") or {}
    rows = [r for r in latency.get("rows", []) if r["status"] == "ok"]
    if not rows:
        raise ConfigError("--plot needs latency measurements (run with --latency)")
    targets = list(dict.fromkeys(r["target"] for r in rows))
    sizes = list(dict.fromkeys(f"{r['height']}×{r['width']}" for r in rows))
    batch = min(r["batch"] for r in rows)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5 + 0.18 * ((len(targets) + 2) // 3)))
    width = 0.8 / max(1, len(targets))
    colors = plt.get_cmap("tab20" if len(targets) > 10 else "tab10").colors  # type: ignore[attr-defined]
    for i, target in enumerate(targets):
        values = []
        for size in sizes:
            match = [
                r
                for r in rows
                if r["target"] == target and f"{r['height']}×{r['width']}" == size and r["batch"] == batch
            ]
            values.append(match[0]["output_mp_per_s"] if match else 0.0)
        left.bar([x + i * width for x in range(len(sizes))], values, width, label=target, color=colors[i % len(colors)])
    left.set_xticks([x + width * (len(targets) - 1) / 2 for x in range(len(sizes))], sizes)
    left.set_xlabel("LR size")
    left.set_ylabel(f"output MP/s (batch {batch}, median)")
    left.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0, -0.14), ncol=3, frameon=False)  # below: no bar hidden
    left.grid(axis="y", alpha=0.3)
    accuracy: dict[str, float] = {}
    for r in rows:
        value = r.get("psnr_vs_reference_db")
        if r["batch"] == 1 and isinstance(value, (int, float)):
            accuracy.setdefault(r["target"], value)
    if accuracy:
        right.barh(list(accuracy), list(accuracy.values()), color="tab:gray")
        right.set_xlabel(f"PSNR vs {latency.get('reference', 'reference')} (dB, higher = closer)")
        for y, value in enumerate(accuracy.values()):
            right.text(value, y, f" {value:.1f}", va="center", fontsize=8)
    else:
        right.text(0.5, 0.5, "no accuracy rows", ha="center")
    env = document.get("environment", {})
    name = document.get("arch") or document.get("model", "")
    fig.suptitle(f"{name} on {env.get('gpu') or env.get('cpu', '')} ({env.get('threads')} threads)")
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _speedup(value: Any) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _num(value: Any, digits: int) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) else str(value)


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)
