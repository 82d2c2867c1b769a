"""Training memory: `chattune compute check`'s estimate beside the measured peak, SmolLM2-135M on this CPU.

    python bench/train_memory.py [--steps 3] [--seq-len 256] [--batch 8] [--json]

Each mode (LoRA r 8 on all linear layers; full fine-tuning) runs a few optimizer steps of the real finetune path
(TRL SFTTrainer on the demo data, fp32, AdamW) in its own process, whose peak RSS is measured; the estimate is
`chattune.compute.estimate_training_memory_gb` for the same parameters. The process baseline (Python, torch and the
libraries imported, nothing loaded) is measured too, since the estimate covers the training state only.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import run_info


def child(mode: str, model_path: str, steps: int, seq_len: int, batch: int) -> None:
    import torch  # noqa: F401 - imported before the baseline reading, as in the training process
    import trl  # noqa: F401
    from datasets import Dataset

    baseline_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from transformers import AutoModelForCausalLM
    from trl import SFTTrainer

    from chattune.data import demo
    from chattune.inference import load_tokenizer
    from chattune.pipeline.config import OptimizationParams, TrainingParams
    from chattune.templates import encode, training_chat_template
    from chattune.training.builders import lora_config, sft_config

    tokenizer = load_tokenizer(model_path)
    template = training_chat_template(tokenizer)
    rows = demo.generate(rows=batch * steps * 2)["train_sft"]
    encoded = [encode(tokenizer, r["messages"], template, False) for r in rows]
    # Pad every row to seq_len with a repeated conversation so that activations match the estimate's length.
    ids = [(e[0] * (seq_len // len(e[0]) + 1))[:seq_len] for e in encoded]
    masks = [(e[1] * (seq_len // len(e[1]) + 1))[:seq_len] for e in encoded]
    data = Dataset.from_dict({"input_ids": ids, "assistant_masks": masks})
    train = TrainingParams(
        max_steps=steps,
        per_device_train_batch_size=batch,
        max_seq_length=seq_len,
        evaluation_strategy="no",
        save_strategy="no",
        learning_rate=1e-4,
    )
    opt = OptimizationParams(apply_lora=mode == "lora")
    with tempfile.TemporaryDirectory() as tmp:
        args = sft_config(train, opt, output_dir=Path(tmp), max_length=seq_len, has_cuda=False, has_eval=False)
        model = AutoModelForCausalLM.from_pretrained(model_path)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=data,
            processing_class=tokenizer,
            peft_config=lora_config(opt) if mode == "lora" else None,
        )
        trainer.train()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"baseline_mb": round(baseline_mb, 1), "peak_mb": round(peak_mb, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "MODEL_PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.steps, args.seq_len, args.batch)
        return
    from chattune.catalog import get_entry
    from chattune.catalog.importer import import_model
    from chattune.compute import estimate_training_memory_gb
    from chattune.workspace import Workspace

    ws = Workspace()
    entry = get_entry("smollm2-135m-instruct")
    imported = import_model(ws.settings, ws.store, entry.name)
    config = json.loads((Path(imported.path) / "config.json").read_text())
    result: dict[str, Any] = {"model": entry.name, "seq_len": args.seq_len, "batch": args.batch, "modes": {}}
    result |= run_info()
    for mode in ("lora", "full"):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                mode,
                imported.path,
                "--steps",
                str(args.steps),
                "--seq-len",
                str(args.seq_len),
                "--batch",
                str(args.batch),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        measured = json.loads(out.stdout.strip().splitlines()[-1])
        estimate_gb = estimate_training_memory_gb(
            entry.parameters,
            lora=mode == "lora",
            seq_len=args.seq_len,
            batch_size=args.batch,
            hidden=config["hidden_size"],
            layers=config["num_hidden_layers"],
            vocab=config["vocab_size"],
        )
        training_mb = measured["peak_mb"] - measured["baseline_mb"]
        result["modes"][mode] = {
            "estimate_mb": round(estimate_gb * 1024, 1),
            "measured_peak_mb": measured["peak_mb"],
            "process_baseline_mb": measured["baseline_mb"],
            "measured_training_mb": round(training_mb, 1),
            "error_pct": round(100 * (estimate_gb * 1024 - training_mb) / training_mb, 1),
        }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for mode, r in result["modes"].items():
            print(
                f"{mode:5s} estimate {r['estimate_mb']:>8.1f} MB  measured {r['measured_training_mb']:>8.1f} MB "
                f"(peak {r['measured_peak_mb']} MB - baseline {r['process_baseline_mb']} MB)  error {r['error_pct']}%"
            )


if __name__ == "__main__":
    main()
