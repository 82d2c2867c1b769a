"""Why bench/serve_throughput.py's one-at-a-time baseline runs its requests in one worker thread: an A/B of the
baseline as it was (a lock over FastAPI's thread pool: each calling thread gets an OpenMP team of its own, whose
idle threads spin on the cores the working one needs) against one worker thread; a lone client and 16 clients,
3 interleaved rounds, SmolLM2 greedy, 32 tokens each.

    python bench/serve_baseline_ab.py [bfloat16|float32]
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import serve_throughput as st

from chattune import processes
from chattune.catalog.importer import import_model
from chattune.workspace import Workspace

LOCKED_APP = """
import sys, threading
import torch, uvicorn
from fastapi import FastAPI
from transformers import AutoModelForCausalLM, AutoTokenizer

path = sys.argv[1]
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, sys.argv[3])).eval()
lock = threading.Lock()
app = FastAPI()

@app.get("/health/ready")
def ready():
    return {"status": "ready"}

@app.post("/v1/chat/completions")
def chat(body: dict):
    ids = tok.apply_chat_template(body["messages"], add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with lock, torch.inference_mode():
        out = model.generate(**ids, max_new_tokens=body["max_tokens"], do_sample=False, pad_token_id=tok.eos_token_id)
    new = out[0, ids["input_ids"].shape[1]:]
    n = int((new != tok.eos_token_id).sum())
    return {"choices": [{"message": {"role": "assistant", "content": tok.decode(new, skip_special_tokens=True)}}],
            "usage": {"prompt_tokens": int(ids["input_ids"].shape[1]), "completion_tokens": n}}

uvicorn.run(app, fd=int(sys.argv[2]), log_level="warning")
"""


def main() -> None:
    ws = Workspace()
    path = import_model(ws.settings, ws.store, "smollm2-135m-instruct").path
    dtype = sys.argv[1] if len(sys.argv) > 1 else "bfloat16"
    tmp = Path(tempfile.mkdtemp())
    urls, pids = {}, {}
    for kind, source in (("locked_thread_pool", LOCKED_APP), ("one_worker_thread", st.BASELINE_APP)):
        script = tmp / f"{kind}.py"
        script.write_text(source)
        pid, port = st._spawn_script(script, str(path), tmp / f"{kind}.log", dtype)
        processes.wait_until_ready(f"http://127.0.0.1:{port}/health/ready", pid, tmp / f"{kind}.log", 300)
        urls[kind], pids[kind] = f"http://127.0.0.1:{port}", pid
    convs = st.prompts(64)
    results: dict[str, list[dict[str, float]]] = {kind: [] for kind in urls}
    try:
        for round_ in range(3):
            for kind in list(urls) if round_ % 2 == 0 else list(urls)[::-1]:
                lone = asyncio.run(st.drive(urls[kind], 1, 4, [32], convs))
                load = asyncio.run(st.drive(urls[kind], 16, 2, [32], convs))
                results[kind].append({"lone": lone["tokens_per_s"], "16_clients": load["tokens_per_s"]})
                print(kind, round_, results[kind][-1], file=sys.stderr, flush=True)
    finally:
        for pid in pids.values():
            os.killpg(pid, signal.SIGTERM)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
