"""GGUF export of SmolLM2-135M-Instruct (the embedded default): how closely each GGUF type answers as the model does.

The imported model (safetensors, fp32) is written with chattune.export.gguf at f32, f16, bf16 and q8_0, each file is
loaded back with transformers' GGUF loader (dequantized to fp32: the file's rounding, not the runtime's kernels, is
what is measured), and both answer the demo task's held-out generation prompts greedily. Reported per type: the file's
size, the export time (min/median over repeats), the prompts whose greedy answer is identical, the share of the
answers' tokens that agree position by position, and the largest logit difference on the prompts.

    .venv/bin/python bench/export_gguf.py [--prompts 20] [--max-new-tokens 24] [--repeats 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))  # also when run with PYTHONSAFEPATH set
from runinfo import describe, run_info, spread

TYPES = (("f32", None), ("f16", None), ("bf16", None), ("f16", "q8_0"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    from chattune.catalog.importer import import_model
    from chattune.data.demo import generate
    from chattune.export.gguf import write_gguf
    from chattune.workspace import Workspace

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    ws = Workspace()
    folder = Path(import_model(ws.settings, ws.store, "smollm2-135m-instruct").path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    rows = generate()["test_gen"][: args.prompts]
    prompts = [[m for m in row["messages"] if m["role"] != "assistant"] for row in rows]
    encoded: list[Any] = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        for p in prompts
    ]

    def answers(m: Any) -> tuple[list[list[int]], list[torch.Tensor]]:
        out, logits = [], []
        with torch.no_grad():
            for ids in encoded:
                gen = m.generate(**ids, max_new_tokens=args.max_new_tokens, do_sample=False)
                out.append(gen[0, ids["input_ids"].shape[1] :].tolist())
                logits.append(m(**ids).logits[0, -1])
        return out, logits

    reference, reference_logits = answers(model)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for dtype, quant in TYPES:
            file = Path(tmp) / f"smollm2-{quant or dtype}.gguf"
            seconds = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                write_gguf(folder, file, dtype=dtype, quant=quant)
                seconds.append(time.perf_counter() - started)
            loaded = AutoModelForCausalLM.from_pretrained(file.parent, gguf_file=file.name, dtype=torch.float32)
            got, logits = answers(loaded.eval())
            same_tokens = sum(
                a == b for want, have in zip(reference, got, strict=True) for a, b in zip(want, have, strict=False)
            )
            results.append(
                {
                    "type": quant or dtype,
                    "bytes": file.stat().st_size,
                    "export_s": spread(seconds),
                    "identical_answers": sum(w == g for w, g in zip(reference, got, strict=True)),
                    "prompts": len(prompts),
                    "token_agreement": round(same_tokens / sum(len(w) for w in reference), 4),
                    "max_logit_diff": round(
                        max((a - b).abs().max().item() for a, b in zip(reference_logits, logits, strict=True)), 4
                    ),
                }
            )
            del loaded
    doc: dict[str, Any] = {
        "run": run_info(),
        "model": "smollm2-135m-instruct",
        "max_new_tokens": args.max_new_tokens,
        "results": results,
    }
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(describe(doc["run"]))
    for r in results:
        print(
            f"{r['type']:>5}: {r['bytes'] / 2**20:7.1f} MiB, "
            f"export {r['export_s']['min']:.1f}/{r['export_s']['median']:.1f} s (min/median), "
            f"identical answers {r['identical_answers']}/{r['prompts']}, token agreement {r['token_agreement']:.1%}, "
            f"max last-position logit diff {r['max_logit_diff']}"
        )


if __name__ == "__main__":
    main()
