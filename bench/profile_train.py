"""Where the training time goes: chattune's finetune step (and TRL for comparison) under PyTorch's profiler.

    python bench/profile_train.py [--contender chattune|trl|trl_tuned] [--rows 48] [--json]

Runs the same job as `bench/train_throughput.py --quick` (SmolLM2, LoRA, the issue's data) in this process, with
`Trainer.train` wrapped in `torch.profiler.profile` (CPU activities, no shapes or stacks, so the overhead stays
small). The self time of every aten op is summed into groups: matmuls (the model's and LoRA's linear layers, the
LM head), attention kernels, the loss (log-softmax and NLL), the optimizer, elementwise math (norms, activations,
residual adds), dtype casts and copies (autocast's bf16 conversions), and the rest; the wall time of `train` minus
the ops' self time is Python and framework overhead (the data collator, hooks, the trainer's loop). A profile
changes what it measures a little: the shares are what count, not the seconds.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runinfo import describe, run_info
from train_throughput import run_chattune, run_trl, write_data

ELEMENTWISE = ("mul", "add", "silu", "pow", "mean", "rsqrt", "neg", "div", "sub", "sum", "fill_", "zero_", "where")
GROUPS: list[tuple[str, tuple[str, ...]]] = [
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::linear", "aten::matmul", "aten::baddbmm")),
    ("loss", ("log_softmax", "nll_loss", "cross_entropy", "aten::logsumexp")),
    ("optimizer", ("_foreach", "adam", "aten::lerp", "aten::addcdiv", "aten::addcmul", "aten::sqrt")),
    ("casts and copies", ("aten::copy_", "aten::_to_copy", "aten::to", "aten::contiguous", "aten::clone")),
    ("embedding and indexing", ("embedding", "index", "gather", "scatter", "aten::cat", "aten::masked")),
    ("elementwise", tuple(f"aten::{name}" for name in ELEMENTWISE)),
]


def group_of(name: str) -> str:
    for group, needles in GROUPS:
        if any(n in name for n in needles):
            return group
    return "other ops"


def profiled(run: Any) -> tuple[Any, dict[str, Any]]:
    """Run ``run()`` with every ``Trainer.train`` call profiled; its result and the grouped profile."""
    import torch
    import transformers

    found: dict[str, Any] = {}
    original = transformers.Trainer.train

    def train(self: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            started = time.perf_counter()
            result = original(self, *args, **kwargs)
            found["wall_s"] = time.perf_counter() - started
        found["ops"] = prof.key_averages()
        return result

    transformers.Trainer.train = train  # type: ignore[method-assign]
    try:
        result = run()
    finally:
        transformers.Trainer.train = original  # type: ignore[method-assign]
    wall = found["wall_s"]
    groups: dict[str, float] = {}
    top: list[tuple[str, float]] = []
    for op in found["ops"]:
        seconds = op.self_cpu_time_total / 1e6
        groups[group_of(op.key)] = groups.get(group_of(op.key), 0.0) + seconds
        top.append((op.key, seconds))
    # The profiler counts each op's self time on the thread that called it; intra-op threads' work is inside it.
    groups["Python and framework (wall - ops)"] = max(0.0, wall - sum(groups.values()))
    top.sort(key=lambda kv: -kv[1])
    return result, {
        "wall_s": round(wall, 2),
        "groups": {
            k: {"s": round(v, 2), "share": round(v / wall, 3)} for k, v in sorted(groups.items(), key=lambda kv: -kv[1])
        },
        "top_ops": [
            {"op": k, "s": round(v, 2), "share": round(v / wall, 3), "group": group_of(k)} for k, v in top[:40]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--contender", choices=["chattune", "trl", "trl_tuned"], default="chattune")
    parser.add_argument("--variant", default="default", help="a chattune variant of bench/train_throughput.py")
    parser.add_argument("--rows", type=int, default=48)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    info = run_info()
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_data(Path(tmp), args.rows)
        data = {k: str(v) for k, v in paths.items()}
        if args.contender == "chattune":
            result, profile = profiled(lambda: run_chattune(data, 1.0, 4, args.variant))
        else:
            tuned = "padding_free_no_checkpointing" if args.contender == "trl_tuned" else ""
            result, profile = profiled(lambda: run_trl(data, 1.0, 4, tuned=tuned))
    doc = {"contender": args.contender, "variant": args.variant, "rows": args.rows, **info, "result": result, **profile}
    if args.json:
        print(json.dumps(doc, indent=2))
        return
    print(describe(info))
    print(f"{args.contender} ({args.variant}): train {profile['wall_s']} s, {result['trained_tokens']} trained tokens")
    for name, g in profile["groups"].items():
        print(f"  {name:36} {g['s']:8.2f} s  {g['share']:6.1%}")
    print("top ops by self time:")
    for op in profile["top_ops"]:
        print(f"  {op['op']:52} {op['s']:8.2f} s  {op['share']:6.1%}")


if __name__ == "__main__":
    main()
