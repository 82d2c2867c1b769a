"""Training speed: chattune's finetune step vs a plain TRL SFTTrainer, same model, LoRA, data and hyperparameters.

    python bench/train_throughput.py [--quick] [--json] [--epochs 1] [--batch 4]

Model: SmolLM2-135M-Instruct (the embedded default), LoRA r 8 / alpha 16 on all linear layers, AdamW lr 2e-4,
max_seq_length 1024, assistant-only loss. Data: the 128 multi-turn dialogs of
../shared/fixtures/assistant_dialogs_azureml_oai (4 to 32 messages: a wide length spread) plus as many rows of the
demo set; the last 16 of each are held out for the eval loss.

- (a) chattune: a real job (validate, model_import, preprocess, finetune, evaluate) run in this process by the
  job runner, with the job's defaults (packing on where the model supports it);
- (b) plain TRL: `SFTTrainer` with its batching defaults (padded batches, no packing), the same LoRA config and the
  same training chat template (assistant-only loss), on the same rows.

- (c) TRL tuned: the same `SFTTrainer` with what TRL offers a user for this model on this device switched on
  (`--tuned`, each a set of SFTConfig fields from `TUNED`: padding-free batches, BFD packing, gradient
  checkpointing off; Liger's fused LM head needs Triton, so a GPU); the best of them by median tokens/s is
  `baseline_tuned`, with the settings it used.

Each runs in its own process (so its peak RSS is its own), `--repeats` times, the contenders interleaved (each
repeat starts with a different one, so that machine noise hits all). Reported for each, as min/median/max over the
repeats: trained tokens/s (loss-bearing assistant tokens, the same count for all), wall time of the training loop,
peak RSS up to the end of training and its eval loss (a chattune job's later evaluate step, which loads models to
generate with, is left out; `peak_rss_mb_process` has the whole process); and the eval loss on the held-out rows.
MFU: the model FLOP/s (LoRA: 4 x parameters FLOPs per token - forward plus activation gradients) against the matmul
peak of the precision the run computes in (bf16 under bf16 autocast, measured in the same run: warmed-up, repeated
2048^3 GEMMs, the best of 5 timings, its kernel path named), and against the fp32 peak as a second figure.
`--json` prints one document with keys `chattune`, `baseline`, `baseline_tuned` (with its `settings`),
`ratio_tokens_per_s` (vs plain TRL), `ratio_vs_tuned`, `precision`, `mfu`, `mfu_fp32`, `peaks`, `commit`,
`versions`, `machine` and `runs` (every run's figures).

GPU variant (`--device cuda`): the Phi-3-mini-4k architecture at full size (3.8B parameters) built from its config
with random weights (throughput does not depend on the weights) and the Phi-3 tokenizer of
../shared/fixtures/phi3_mini_tokenizer, bf16 weights, LoRA and full fine-tuning (`--modes lora,full`), each beside
plain TRL; the matmul peak is the GPU's bf16 one, and full fine-tuning counts 6 x parameters FLOPs per token.
`--modes qlora` (CUDA only, with bitsandbytes installed): LoRA over the base loaded in 4-bit NF4
(`optimization.load_in_4bit`) beside plain TRL given the same `BitsAndBytesConfig`; its peak GPU memory is the
figure that matters (docs/qlora.md).
`--layers N` shrinks the architecture (a smoke run of the same path on a CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import describe, run_info, spread

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
FIXTURE = FIXTURES / "assistant_dialogs_azureml_oai" / "chat_train.jsonl"
PHI3_TOKENIZER = FIXTURES / "phi3_mini_tokenizer"
SMOLLM2 = "smollm2-135m-instruct"
HELD_OUT = 16
HYPER: dict[str, Any] = {
    "learning_rate": 2e-4,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
    "max_seq_length": 1024,
    "seed": 42,
}
LORA: dict[str, Any] = {"apply_lora": True, "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0}
# TRL's SFTConfig trains in bf16 by default where the device has it; chattune's precision "16" is the same thing.
PRECISION = "16"


def write_data(out: Path, rows_per_source: int) -> dict[str, Path]:
    from chattune.data import demo

    if not FIXTURE.exists():
        raise SystemExit(f"{FIXTURE} is missing: this benchmark needs the shared fixtures beside the checkout")
    dialogs = [json.loads(line) for line in FIXTURE.read_text(encoding="utf-8").splitlines() if line.strip()]
    demo_rows = demo.generate(rows=rows_per_source * 2)["train_sft"]
    dialogs = dialogs[:rows_per_source]
    demo_rows = [{"messages": r["messages"]} for r in demo_rows[:rows_per_source]]
    train = dialogs[:-HELD_OUT] + demo_rows[:-HELD_OUT]
    valid = dialogs[-HELD_OUT:] + demo_rows[-HELD_OUT:]
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.jsonl", "validation": out / "validation.jsonl"}
    for name, rows in (("train", train), ("validation", valid)):
        paths[name].write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return paths


# Each of chattune's speed settings switched off (or on) alone, for `--variants` (docs/benchmarks.md).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "no_padding_free": {"training": {"padding_free": False}},
    "no_compact_lm_head": {"training": {"compact_lm_head": False}},
    "neither": {"training": {"padding_free": False, "compact_lm_head": False}},
    "no_per_conversation_attention": {"training": {"per_conversation_attention": False}},
    "group_by_length": {"training": {"group_by_length": True}},
    "no_gradient_checkpointing": {"training": {"gradient_checkpointing": False}},
    "checkpoint_every_layer": {"training": {"gradient_checkpointing_every_n_layers": 1}},
    "checkpoint_every_3rd": {"training": {"gradient_checkpointing_every_n_layers": 3}},
    "precision_32": {"optimization": {"precision": "32"}},
    "packing": {"training": {"packing": True}},
    "threads_1": {"training": {"num_threads": 1}},
    "torch_compile": {"training": {"torch_compile": True}},
    "no_bf16_frozen_weights": {"training": {"bf16_frozen_weights": False}},
}


# What a TRL user switches on for speed (SFTConfig fields), for the "TRL tuned" contender (`--tuned`). TRL's own
# defaults are padded batches with gradient checkpointing of every layer and bf16 autocast. Padding-free batches and
# BFD packing (which implies padding-free) run on SDPA here: transformers reads the conversations' boundaries from
# position_ids and masks across them. Liger's fused LM head and loss (`use_liger_kernel`) need Triton: GPU only.
# TRL enforces no max_length on padding-free batches without packing (it refuses one): the padding-free contenders
# run with max_length None, and `trained_tokens` shows whether that trained on more tokens than 1024-token rows hold.
TUNED: dict[str, dict[str, Any]] = {
    "padding_free": {"padding_free": True, "max_length": None},
    "padding_free_no_checkpointing": {"padding_free": True, "max_length": None, "gradient_checkpointing": False},
    "packing_bfd": {"packing": True, "packing_strategy": "bfd"},
    "packing_bfd_no_checkpointing": {"packing": True, "packing_strategy": "bfd", "gradient_checkpointing": False},
    "no_checkpointing": {"gradient_checkpointing": False},
}
DEFAULT_TUNED = "padding_free_no_checkpointing,packing_bfd_no_checkpointing"


def build_phi3_mini(out: Path, layers: int | None = None, hidden: int | None = None) -> Path:
    """Phi-3-mini-4k-instruct's architecture (microsoft/Phi-3-mini-4k-instruct's config.json values) with random
    bf16 weights, built on the GPU when there is one, saved with the real Phi-3 tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Phi3Config

    if not PHI3_TOKENIZER.exists():
        raise SystemExit(f"{PHI3_TOKENIZER} is missing: the GPU variant needs the shared fixtures beside the checkout")
    width = hidden or 3072  # shrunk (a CPU dry run): heads of 96 like the real model, MLP 8/3 x wider
    heads = max(1, width // 96)
    config = Phi3Config(
        vocab_size=32064, hidden_size=heads * 96, intermediate_size=8192 * heads // 32,
        num_hidden_layers=layers or 32, num_attention_heads=heads, num_key_value_heads=heads,
        max_position_embeddings=4096, sliding_window=2047, rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=32000,
        pad_token_id=32000, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(PHI3_TOKENIZER).save_pretrained(out)
    return out


def run_chattune(
    data: dict[str, str], epochs: float, batch: int, variant: str = "default", model: str = SMOLLM2, mode: str = "lora"
) -> dict[str, Any]:
    from chattune.pipeline.runner import run_job
    from chattune.workspace import Workspace

    ws = Workspace()
    spec = {
        "model": model,
        "experiment_name": "bench_train_throughput",
        "data": {"train": data["train"], "validation": data["validation"]},
        "training": {
            **HYPER,
            "num_train_epochs": epochs,
            "per_device_train_batch_size": batch,
            "per_device_eval_batch_size": batch,
            "evaluation_strategy": "no",
            "save_strategy": "no",
            "logging_steps": 10,
        },
        "optimization": {
            **LORA,
            "apply_lora": mode in ("lora", "qlora"),
            "load_in_4bit": mode == "qlora",
            "precision": PRECISION,
        },
        "evaluation": {"max_rows": 1, "max_new_tokens": 1},
        "settings": {"force_rerun": True},
    }
    for section, values in VARIANTS[variant].items():
        spec[section] = {**spec[section], **values}  # type: ignore[dict-item]
    job, _ = ws.jobs.create(spec, start=False)
    run_job(job.id, ws.settings)
    finished = ws.jobs.get(job.id)
    if finished.status != "succeeded":
        raise SystemExit(f"chattune job {job.id} {finished.status}: {finished.error} (chattune jobs show {job.id})")
    steps = {s.name: s for s in finished.steps}
    metrics = steps["finetune"].outputs["metrics"]
    return {
        "job": job.id,
        "variant": variant,
        "trained_tokens": metrics["trained_tokens"],
        "input_tokens": metrics["input_tokens"],
        "train_s": metrics["train_runtime_s"],
        "eval_loss": metrics.get("valid_loss"),
        "steps": metrics["global_steps"],
        # the process's peak up to the end of training and its eval loss, as TRL's process is measured (the job's
        # evaluate step, which loads models to generate with, runs after it in this process)
        "peak_rss_mb_training": metrics.get("peak_rss_mb"),
    }


def run_trl(
    data: dict[str, str], epochs: float, batch: int, model: str = SMOLLM2, mode: str = "lora", tuned: str = ""
) -> dict[str, Any]:
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from chattune.catalog.importer import import_model
    from chattune.inference import load_tokenizer
    from chattune.pipeline.config import OptimizationParams
    from chattune.templates import training_chat_template
    from chattune.training.builders import lora_config, quantization_config
    from chattune.workspace import Workspace

    ws = Workspace()
    path = import_model(ws.settings, ws.store, model).path
    cuda = torch.cuda.is_available()
    tokenizer = load_tokenizer(path)
    tokenizer.chat_template = training_chat_template(tokenizer)  # the same assistant-only masks as chattune's
    files = load_dataset("json", data_files={"train": data["train"], "validation": data["validation"]})
    args = SFTConfig(
        output_dir=tempfile.mkdtemp(),
        num_train_epochs=epochs,
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        learning_rate=HYPER["learning_rate"],
        lr_scheduler_type=HYPER["lr_scheduler_type"],
        seed=HYPER["seed"],
        assistant_only_loss=True,
        use_cpu=not cuda,
        report_to="none",
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        **({"max_length": HYPER["max_seq_length"]} | TUNED.get(tuned, {})),
    )
    if mode == "qlora":  # what a TRL user writes for QLoRA: the same BitsAndBytesConfig, the model on the GPU
        quantized = quantization_config(OptimizationParams(**LORA, load_in_4bit=True))
        base = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch.bfloat16, quantization_config=quantized, device_map={"": 0}
        )
    else:  # bf16 weights on a GPU, fp32 under bf16 autocast on a CPU (TRL's bf16 default)
        base = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if cuda else torch.float32)
    trainer = SFTTrainer(
        model=base,
        args=args,
        train_dataset=files["train"],
        eval_dataset=files["validation"],
        processing_class=tokenizer,
        peft_config=lora_config(OptimizationParams(**LORA)) if mode in ("lora", "qlora") else None,
    )
    rows: Any = trainer.train_dataset
    tokens = sum(sum(1 for x in row if x != -100) for row in rows["labels"]) * epochs
    inputs = sum(len(row) for row in rows["input_ids"]) * epochs
    started = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - started
    return {
        "trained_tokens": int(tokens),
        "input_tokens": int(inputs),
        "train_s": round(train_s, 2),
        "eval_loss": float(trainer.evaluate()["eval_loss"]),
        "steps": int(result.global_step),
    }


def matmul_peak(dtype: str = "float32", device: str = "cpu") -> dict[str, Any]:
    """This device's matmul throughput in ``dtype`` (GFLOP/s): warmed up, then the best of 5 timings of repeated
    GEMMs (8192^3 on a GPU, 2048^3 on a CPU; each timing at least ~0.5 s), and the kernel path that computes it."""
    import torch

    kind, size = getattr(torch, dtype), 8192 if device == "cuda" else 2048
    a = torch.randn(size, size, dtype=kind, device=device)
    b = torch.randn(size, size, dtype=kind, device=device)

    def timed(repeats: int) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - started

    once = max(timed(3) / 3, 1e-6)  # the warm-up, which also sizes each timing
    repeats = max(3, int(0.5 / once))
    best = min(timed(repeats) for _ in range(5))
    return {"gflops": round(2 * size**3 * repeats / best / 1e9, 1), "kernel": kernel_path(dtype, device)}


def kernel_path(dtype: str, device: str) -> str:
    """Which hardware path computes a ``dtype`` matmul here (oneDNN picks AMX, then AVX512-BF16, for bf16)."""
    import torch

    if device == "cuda":
        return f"CUDA {torch.cuda.get_device_name()} ({dtype} tensor cores)"
    isa = set(run_info()["machine"]["isa"])
    capability = torch.backends.cpu.get_cpu_capability()
    if dtype == "bfloat16":
        if "amx_bf16" in isa:
            return "oneDNN AMX-BF16"
        return "oneDNN AVX512-BF16" if "avx512_bf16" in isa else f"no native bf16 (converted, {capability} fp32)"
    return f"fp32 {capability}"


def flop_counts(model: str = SMOLLM2) -> tuple[int, int]:
    """(matmul parameters every token goes through, LM head parameters), from the model's own config and weights."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from chattune.catalog.importer import import_model
    from chattune.workspace import Workspace

    ws = Workspace()
    path = import_model(ws.settings, ws.store, model).path
    config = AutoConfig.from_pretrained(path)
    with torch.device("meta"):
        parameters = AutoModelForCausalLM.from_config(config).num_parameters()
    head = config.vocab_size * config.hidden_size
    embeddings = head if config.tie_word_embeddings else 2 * head  # a lookup, not a matmul
    return parameters - embeddings, head


def child(kind: str, data_dir: str, epochs: float, batch: int, variant: str, model: str, mode: str) -> None:
    import torch

    data = {"train": f"{data_dir}/train.jsonl", "validation": f"{data_dir}/validation.jsonl"}
    if kind == "chattune":
        result = run_chattune(data, epochs, batch, variant, model, mode)
    else:
        result = run_trl(data, epochs, batch, model, mode, tuned=variant if kind == "baseline_tuned" else "")
    result["peak_rss_mb_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["peak_rss_mb"] = result.pop("peak_rss_mb_training", None) or result["peak_rss_mb_process"]
    if torch.cuda.is_available():
        result["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    result["tokens_per_s"] = round(result["trained_tokens"] / result["train_s"], 1)
    print(json.dumps(result))


# Dense bf16 tensor-core peaks from the vendors' data sheets, for MFU as it is usually quoted (beside the peak
# measured in the same run).
SPEC_BF16_TFLOPS = {"H100": 989.4, "H200": 989.4, "A100": 312.0}


def contenders(variants: list[str], tuned: list[str]) -> list[tuple[str, str]]:
    """(kind, variant) of every contender, and the key its figures go under."""
    return [("chattune", v) for v in variants] + [("baseline", "trl")] + [("baseline_tuned", t) for t in tuned]


def key_of(kind: str, variant: str, variants: list[str]) -> str:
    if kind == "chattune":
        return "chattune" if variant == variants[0] else f"chattune_{variant}"
    return "baseline" if kind == "baseline" else f"baseline_tuned_{variant}"


def measure(
    tmp: str, model: str, mode: str, variants: list[str], tuned: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    """Every contender ``args.repeats`` times, each run in its own process, the order rotated in each repeat."""
    env = {**os.environ, **({"CUDA_VISIBLE_DEVICES": ""} if args.device == "cpu" else {})}
    order = contenders(variants, tuned)
    runs: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(args.repeats):
        shift = repeat % len(order)
        for kind, variant in order[shift:] + order[:shift]:
            command = [sys.executable, __file__, "--child", kind, tmp, variant, model, mode]
            command += ["--epochs", str(args.epochs), "--batch", str(args.batch)]
            out = subprocess.run(command, capture_output=True, text=True, env=env)
            if out.returncode != 0:
                raise SystemExit(f"{kind} ({variant}, {mode}) failed:\n{out.stderr[-3000:]}")
            record = json.loads(out.stdout.strip().splitlines()[-1]) | {"repeat": repeat}
            runs.setdefault(key_of(kind, variant, variants), []).append(record)
            progress(f"{mode} {key_of(kind, variant, variants)} repeat {repeat + 1}: {record['tokens_per_s']} tokens/s")
    section: dict[str, Any] = {key: summarize(records) for key, records in runs.items()}
    if tuned:
        best = max(tuned, key=lambda t: section[f"baseline_tuned_{t}"]["tokens_per_s"])
        section["baseline_tuned"] = {**section[f"baseline_tuned_{best}"], "name": best, "settings": TUNED[best]}
    section["runs"] = [r | {"contender": k} for k, records in runs.items() for r in records]
    return section


def summarize(records: list[dict[str, Any]]) -> dict[str, Any]:
    """A contender's figures: the run of median tokens/s (its eval loss and steps), with min/median/max of the
    speed, the training wall time and the peak memory over every run."""
    ranked = sorted(records, key=lambda r: r["tokens_per_s"])
    chosen = dict(ranked[(len(ranked) - 1) // 2])
    chosen["tokens_per_s"] = round(statistics.median(r["tokens_per_s"] for r in records), 1)
    for field in ("tokens_per_s", "train_s", "peak_rss_mb", "peak_gpu_mb"):
        if field in chosen:
            chosen[f"{field}_spread"] = spread([r[field] for r in records], 1)
    chosen["repeats"] = len(records)
    chosen.pop("repeat", None)
    return chosen


def progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def add_flop_figures(section: dict[str, Any], body: int, head: int, mode: str, peaks: dict[str, float]) -> None:
    """Model FLOP/s and MFU of each contender (``peaks``: figure name -> GFLOP/s). Per token, LoRA training needs
    4 x parameters FLOPs (forward plus activation gradients; the frozen weights get none), full fine-tuning 6 x (plus
    weight gradients): every real (non-padding) token through the layers, only the loss tokens through the LM head.
    Attention's own FLOPs are left out, so these are lower bounds."""
    per_parameter = 4 if mode in ("lora", "qlora") else 6
    contenders_ = [k for k in section if k.startswith(("baseline", "chattune")) and isinstance(section[k], dict)]
    for key in contenders_:
        r = section[key]
        seconds = r["trained_tokens"] / r["tokens_per_s"]  # the median run's speed
        achieved = per_parameter * (body * r["input_tokens"] + head * r["trained_tokens"]) / seconds / 1e9
        r["model_gflops"] = round(achieved, 1)
        for name, peak in peaks.items():
            r[name] = round(achieved / peak, 3)
        r["ratio_tokens_per_s"] = round(r["tokens_per_s"] / section["baseline"]["tokens_per_s"], 2)
    section["ratio_tokens_per_s"] = section["chattune"]["ratio_tokens_per_s"]
    if "baseline_tuned" in section:
        tuned = section["baseline_tuned"]["tokens_per_s"]
        section["ratio_vs_tuned"] = round(section["chattune"]["tokens_per_s"] / tuned, 2)
    for name in peaks:
        section[name] = section["chattune"][name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rows", type=int, default=128, help="rows from each source (dialogs, demo)")
    parser.add_argument("--quick", action="store_true", help="48 rows per source: under 3 minutes")
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--variants",
        default="default",
        help=f"comma-separated chattune configurations to run beside the baseline: {', '.join(VARIANTS)}",
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--arch",
        choices=["smollm2", "phi3-mini-4k", "tiny-test"],
        help="smollm2 (SmolLM2-135M-Instruct; the CPU default), phi3-mini-4k (random weights; the cuda default) or "
        "tiny-test (the catalog's tiny random model: a dry run of the benchmark's code, not a measurement)",
    )
    parser.add_argument(
        "--modes", default=None, help="lora, full, qlora (cuda) or a list (lora,full); cpu default lora, cuda lora,full"
    )
    parser.add_argument("--layers", type=int, help="phi3-mini-4k with fewer layers (a smoke run on a CPU)")
    parser.add_argument("--hidden", type=int, help="phi3-mini-4k narrower (a multiple of 96; a dry run on a CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each contender, interleaved (default 3)")
    parser.add_argument(
        "--tuned",
        default=DEFAULT_TUNED,
        help=f"comma-separated TRL settings tried as 'TRL tuned' (the best is baseline_tuned; '' for none): "
        f"{', '.join(TUNED)}",
    )
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)  # KIND DATA_DIR VARIANT MODEL MODE
    args = parser.parse_args()
    if args.child:
        kind, data_dir, variant, model, mode = args.child
        child(kind, data_dir, args.epochs, args.batch, variant, model, mode)
        return
    if args.quick:
        args.rows = 48
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    tuned = [t.strip() for t in args.tuned.split(",") if t.strip()]
    if not set(tuned) <= set(TUNED):
        parser.error(f"--tuned: unknown {', '.join(sorted(set(tuned) - set(TUNED)))}; choose from {', '.join(TUNED)}")
    if args.repeats < 1:
        parser.error("--repeats: at least 1")
    arch = args.arch or ("phi3-mini-4k" if args.device == "cuda" else "smollm2")
    modes = [m.strip() for m in (args.modes or ("lora,full" if args.device == "cuda" else "lora")).split(",")]
    if not set(modes) <= {"lora", "full", "qlora"}:
        parser.error(f"--modes: {args.modes!r}; use lora, full, qlora or a list (lora,full)")
    if "qlora" in modes and args.device != "cuda":
        parser.error("--modes qlora: bitsandbytes' 4-bit kernels need --device cuda")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: PyTorch sees no CUDA device here")

    info = run_info()
    progress(describe(info))
    result: dict[str, Any] = {"device": args.device, "arch": arch, "epochs": args.epochs, "batch": args.batch}
    result |= {"repeats": args.repeats, "quick": args.quick} | info
    with tempfile.TemporaryDirectory() as tmp:
        write_data(Path(tmp), args.rows)
        if arch == "phi3-mini-4k":
            model = str(build_phi3_mini(Path(tmp) / "model", args.layers, args.hidden))
        else:
            model = SMOLLM2 if arch == "smollm2" else arch  # tiny-test: a catalog name
        body, head = flop_counts(model)
        sections = {mode: measure(tmp, model, mode, variants, tuned, args) for mode in modes}
    result["precision"], measured = precision_and_peaks(args.device)
    peaks = {"mfu": measured["compute"]["gflops"], "mfu_fp32": measured["fp32"]["gflops"]}
    if args.device == "cuda":
        import torch

        name = torch.cuda.get_device_name()
        spec = next((v for k, v in SPEC_BF16_TFLOPS.items() if k in name), None)
        if spec:
            peaks["mfu_of_spec"] = spec * 1000
        result |= {"gpu": name, "spec_bf16_gflops": spec and spec * 1000}
    result["peaks"] = measured
    for mode, section in sections.items():
        add_flop_figures(section, body, head, mode, peaks)
    first = sections[modes[0]]
    result |= first  # the first mode's figures at the top (the keys of the CPU run)
    if len(modes) > 1:
        result |= {mode: sections[mode] for mode in modes}
    if args.json:
        print(json.dumps(result))
        return
    print(describe(info))
    for mode, section in sections.items():
        for key in [k for k in section if k.startswith(("baseline", "chattune")) and isinstance(section[k], dict)]:
            r = section[key]
            memory = f"peak RSS {r['peak_rss_mb']:.0f} MB"
            if "peak_gpu_mb" in r:
                memory = f"peak GPU {r['peak_gpu_mb']:.0f} MB"
            mfu = ", ".join(f"{name} {r[name]:.1%}" for name in peaks)
            speed = r["tokens_per_s_spread"]
            print(
                f"{mode} {key:36} {r['tokens_per_s']:8.1f} trained tokens/s ({speed['min']}-{speed['max']}; "
                f"{r['ratio_tokens_per_s']}x) | eval loss {r['eval_loss']:.4f} | {memory} | {mfu}"
            )
        if "baseline_tuned" in section:
            print(f"{mode} TRL tuned = {section['baseline_tuned']['name']}: {section['baseline_tuned']['settings']}")
    print(f"precision {result['precision']}; matmul peaks (GFLOP/s): {measured}")


def precision_and_peaks(device: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """The precision the runs compute in (bf16 autocast where the device has native bf16, as chattune's precision
    "16" and TRL's default do; else fp32) and the matmul peaks: ``compute`` (that precision's) and ``fp32``."""
    from chattune.compute import cpu_has_bf16

    bf16 = device == "cuda" or cpu_has_bf16()
    fp32 = matmul_peak("float32", device)
    compute = matmul_peak("bfloat16", device) if bf16 else fp32
    return ("bf16" if bf16 else "fp32"), {"compute": compute, "fp32": fp32}


if __name__ == "__main__":
    main()
