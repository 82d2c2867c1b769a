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


def run_chattune(data: dict[str, str], epochs: float, batch: int) -> dict[str, Any]:
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
    job, _ = ws.jobs.create(spec, start=False)
    run_job(job.id, ws.settings)
    finished = ws.jobs.get(job.id)
    steps = {s.name: s for s in finished.steps}
    metrics = steps["finetune"].outputs["metrics"]
    return {
        "job": job.id,
        "trained_tokens": metrics["trained_tokens"],
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
    labels: Any = trainer.train_dataset["labels"]  # type: ignore[index]
    tokens = sum(sum(1 for x in row if x != -100) for row in labels) * epochs
    started = time.perf_counter()
    result = trainer.train()
    train_s = time.perf_counter() - started
    return {
        "trained_tokens": int(tokens),
        "train_s": round(train_s, 2),
        "eval_loss": float(trainer.evaluate()["eval_loss"]),
        "steps": int(result.global_step),
    }


def matmul_gflops(size: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    started = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return round(2 * size**3 * repeats / (time.perf_counter() - started) / 1e9, 1)


def child(kind: str, data_dir: str, epochs: float, batch: int) -> None:
    data = {"train": f"{data_dir}/train.jsonl", "validation": f"{data_dir}/validation.jsonl"}
    result = run_chattune(data, epochs, batch) if kind == "chattune" else run_trl(data, epochs, batch)
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
    parser.add_argument("--child", nargs=2, metavar=("KIND", "DATA_DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.epochs, args.batch)
        return
    if args.quick:
        args.rows = 48

    from chattune.catalog import get_entry

    parameters = get_entry("smollm2-135m-instruct").parameters
    result: dict[str, Any] = {"model": "smollm2-135m-instruct", "epochs": args.epochs, "batch": args.batch}
    with tempfile.TemporaryDirectory() as tmp:
        write_data(Path(tmp), args.rows)
        for kind in ("chattune", "baseline"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    kind,
                    tmp,
                    "--epochs",
                    str(args.epochs),
                    "--batch",
                    str(args.batch),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise SystemExit(f"{kind} failed:\n{out.stderr[-3000:]}")
            result[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    result["matmul_gflops"] = matmul_gflops()
    for kind in ("chattune", "baseline"):
        achieved = 4 * parameters * result[kind]["tokens_per_s"] / 1e9  # loss tokens only: a lower bound
        result[kind]["model_gflops"] = round(achieved, 1)
        result[kind]["mfu"] = round(achieved / result["matmul_gflops"], 3)
    result["ratio_tokens_per_s"] = round(result["chattune"]["tokens_per_s"] / result["baseline"]["tokens_per_s"], 2)
    result["mfu"] = result["chattune"]["mfu"]
    if args.json:
        print(json.dumps(result))
        return
    for kind in ("chattune", "baseline"):
        r = result[kind]
        print(
            f"{kind:9} {r['tokens_per_s']:8.1f} trained tokens/s | train {r['train_s']:7.1f} s | "
            f"eval loss {r['eval_loss']:.4f} | peak RSS {r['peak_rss_mb']:.0f} MB | MFU {r['mfu']:.1%}"
        )
    print(f"ratio {result['ratio_tokens_per_s']}x; matmul peak {result['matmul_gflops']} GFLOP/s")


if __name__ == "__main__":
    main()
