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

Each runs in its own process (so its peak RSS is its own). Reported for each: trained tokens/s (loss-bearing
assistant tokens, the same count for both), wall time of the training loop, peak RSS, eval loss on the held-out
rows; the ratio; and this machine's fp32 matmul throughput (GFLOP/s, measured in the same run) with the achieved
model FLOP/s as a fraction of it (MFU; LoRA: 4 x parameters FLOPs per token - forward plus activation gradients).
`--json` prints one document with keys `chattune`, `baseline`, `ratio_tokens_per_s`, `matmul_gflops`, `mfu`.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FIXTURE = (
    Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "assistant_dialogs_azureml_oai" / "chat_train.jsonl"
)
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
    "group_by_length": {"training": {"group_by_length": True}},
    "no_gradient_checkpointing": {"training": {"gradient_checkpointing": False}},
    "checkpoint_every_2nd": {"training": {"gradient_checkpointing_every_n_layers": 2}},
    "checkpoint_every_3rd": {"training": {"gradient_checkpointing_every_n_layers": 3}},
    "precision_32": {"optimization": {"precision": "32"}},
    "packing": {"training": {"packing": True}},
    "threads_1": {"training": {"num_threads": 1}},
    "torch_compile": {"training": {"torch_compile": True}},
}


def run_chattune(data: dict[str, str], epochs: float, batch: int, variant: str = "default") -> dict[str, Any]:
    from chattune.pipeline.runner import run_job
    from chattune.workspace import Workspace

    ws = Workspace()
    spec = {
        "model": "smollm2-135m-instruct",
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
        "optimization": {**LORA, "precision": PRECISION},
        "evaluation": {"max_rows": 1, "max_new_tokens": 1},
        "settings": {"force_rerun": True},
    }
    for section, values in VARIANTS[variant].items():
        spec[section] = {**spec[section], **values}  # type: ignore[dict-item]
    job, _ = ws.jobs.create(spec, start=False)
    run_job(job.id, ws.settings)
    finished = ws.jobs.get(job.id)
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
    }


def run_trl(data: dict[str, str], epochs: float, batch: int) -> dict[str, Any]:
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    from chattune.catalog.importer import import_model
    from chattune.inference import load_tokenizer
    from chattune.pipeline.config import OptimizationParams
    from chattune.training.builders import lora_config
    from chattune.training.templates import training_chat_template
    from chattune.workspace import Workspace

    ws = Workspace()
    path = import_model(ws.settings, ws.store, "smollm2-135m-instruct").path
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
        max_length=HYPER["max_seq_length"],
        seed=HYPER["seed"],
        assistant_only_loss=True,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=args,
        train_dataset=files["train"],
        eval_dataset=files["validation"],
        processing_class=tokenizer,
        peft_config=lora_config(OptimizationParams(**LORA)),
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


def matmul_gflops(dtype: str = "float32", size: int = 2048, repeats: int = 10) -> float:
    import torch

    kind = getattr(torch, dtype)
    a, b = torch.randn(size, size, dtype=kind), torch.randn(size, size, dtype=kind)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return round(2 * size**3 * repeats / (time.perf_counter() - started) / 1e9, 1)


def flop_counts() -> tuple[int, int]:
    """(matmul parameters every token goes through, LM head parameters), from the model's own config."""
    from transformers import AutoConfig

    from chattune.catalog import get_entry
    from chattune.catalog.importer import import_model
    from chattune.workspace import Workspace

    ws = Workspace()
    config = AutoConfig.from_pretrained(import_model(ws.settings, ws.store, "smollm2-135m-instruct").path)
    head = config.vocab_size * config.hidden_size
    embeddings = head if config.tie_word_embeddings else 2 * head  # a lookup, not a matmul
    return get_entry("smollm2-135m-instruct").parameters - embeddings, head


def child(kind: str, data_dir: str, epochs: float, batch: int, variant: str) -> None:
    data = {"train": f"{data_dir}/train.jsonl", "validation": f"{data_dir}/validation.jsonl"}
    result = run_chattune(data, epochs, batch, variant) if kind == "chattune" else run_trl(data, epochs, batch)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    result["tokens_per_s"] = round(result["trained_tokens"] / result["train_s"], 1)
    print(json.dumps(result))


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
    parser.add_argument("--child", nargs=3, metavar=("KIND", "DATA_DIR", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.epochs, args.batch, args.child[2])
        return
    if args.quick:
        args.rows = 48
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")

    body, head = flop_counts()
    result: dict[str, Any] = {"model": "smollm2-135m-instruct", "epochs": args.epochs, "batch": args.batch}
    runs: list[tuple[str, str]] = [("chattune", v) for v in variants] + [("baseline", "trl")]
    with tempfile.TemporaryDirectory() as tmp:
        write_data(Path(tmp), args.rows)
        for kind, variant in runs:
            command = [sys.executable, __file__, "--child", kind, tmp, variant]
            command += ["--epochs", str(args.epochs), "--batch", str(args.batch)]
            out = subprocess.run(command, capture_output=True, text=True)
            if out.returncode != 0:
                raise SystemExit(f"{kind} ({variant}) failed:\n{out.stderr[-3000:]}")
            key = kind if kind == "baseline" or variant == variants[0] else f"chattune_{variant}"
            result[key] = json.loads(out.stdout.strip().splitlines()[-1])
    result["matmul_gflops"] = matmul_gflops("float32")
    result["matmul_gflops_bf16"] = matmul_gflops("bfloat16")
    keys = [k for k in result if k == "baseline" or k.startswith("chattune")]
    for key in keys:
        r = result[key]
        # Model FLOPs of LoRA training (forward plus activation gradients: 4 per parameter per token) that the task
        # needs: every real (non-padding) token through the layers, only the loss tokens through the LM head.
        # Attention's own FLOPs are left out, so this is a lower bound.
        flops = 4 * (body * r["input_tokens"] + head * r["trained_tokens"])
        achieved = flops / r["train_s"] / 1e9
        r["model_gflops"] = round(achieved, 1)
        r["mfu"] = round(achieved / result["matmul_gflops"], 3)
        r["mfu_of_bf16_peak"] = round(achieved / result["matmul_gflops_bf16"], 3)
        r["ratio_tokens_per_s"] = round(r["tokens_per_s"] / result["baseline"]["tokens_per_s"], 2)
    result["ratio_tokens_per_s"] = result["chattune"]["ratio_tokens_per_s"]
    result["mfu"] = result["chattune"]["mfu"]
    if args.json:
        print(json.dumps(result))
        return
    for key in keys:
        r = result[key]
        label = f"chattune_{variants[0]}" if key == "chattune" else key
        print(
            f"{label:34} {r['tokens_per_s']:7.1f} trained tokens/s ({r['ratio_tokens_per_s']}x) | train "
            f"{r['train_s']:6.1f} s | eval loss {r['eval_loss']:.4f} | peak RSS {r['peak_rss_mb']:.0f} MB | "
            f"MFU {r['mfu']:.1%} of fp32, {r['mfu_of_bf16_peak']:.1%} of bf16"
        )
    print(f"matmul peak: {result['matmul_gflops']} GFLOP/s fp32, {result['matmul_gflops_bf16']} bf16")


if __name__ == "__main__":
    main()
