"""Jobs on a Ray compute target: a local cluster started with `chattune compute start-ray` (a head and one worker
node on 127.0.0.1, one CPU each), a tiny-test job on 2 Ray Train workers (one per node: each node has one CPU), its
driver killed with SIGKILL and the job resumed from the last Ray checkpoint, then registered with its lineage.
`compute stop-ray` stops exactly what `start-ray` started: no process of the cluster remains.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from chattune.schemas import ComputeTargetList, ComputeTargetPublic, ComputeTargetStopped, DeploymentPublic, JobSummary
from chattune.serving.keys import INSTANCE_TOKEN_FILE
from tests.conftest import _stop_leftovers, exact, parse_json
from tests.integration.test_job_lifecycle import _wait
from tests.integration.test_security import walk_instance_routes

pytest.importorskip("ray.train", reason="the ray extra is not installed (make install installs it)")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="two Ray nodes of one CPU each need two CPU cores"),
]
Run = Callable[..., subprocess.CompletedProcess[str]]


def _cluster_processes(temp_dir: str, pids: list[int]) -> list[int]:
    """Processes of the cluster still running: its `ray start` processes and anything naming its temp dir."""
    left = []
    for proc in psutil.process_iter(["pid", "cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        cmdline = " ".join(proc.info["cmdline"] or [])
        if proc.info["pid"] in pids or temp_dir in cmdline:
            left.append(proc.info["pid"])
    return left


@pytest.fixture(scope="module")
def ray_workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    root = tmp_path_factory.mktemp("ray")
    home = root / "home"
    env = {**os.environ, "CHATTUNE_HOME": str(home), "CHATTUNE_CREDENTIALS_PATH": str(root / "credentials.json")}

    def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "chattune.cli.main", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )

    started = time.monotonic()
    target = exact(ComputeTargetPublic, parse_json(run("compute", "start-ray", "dev", "--workers", "1", "--json")))
    print(f"start-ray: {time.monotonic() - started:.1f}s")
    cluster = target["local_cluster"]
    try:
        yield {"home": home, "run": run, "target": target, "root": root}
    finally:
        _stop_leftovers(home)  # a job runner a failed test left behind (a Ray driver)
        stopped = run("compute", "stop-ray", "dev", "--json")
        left = _cluster_processes(cluster["temp_dir"], cluster["pids"])
        for pid in left:  # a failed stop must not leave the cluster running on a shared machine
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()
        doc = exact(ComputeTargetStopped, parse_json(stopped))
        assert doc["stopped_pids"] == cluster["pids"]
        assert left == [], f"processes of the cluster left running: {left}"
        assert not Path(cluster["temp_dir"]).exists()


def test_compute_list_shows_the_clusters_nodes_as_ray_reports_them(ray_workspace: dict[str, Any]) -> None:
    listed = exact(ComputeTargetList, parse_json(ray_workspace["run"]("compute", "list", "--json")))
    by_name = {t["name"]: t for t in listed["data"]}
    assert listed["data"][0]["name"] == "local" and by_name["local"]["kind"] == "local"
    dev = by_name["dev"]
    assert dev["reachable"] and dev["managed"] and dev["address"] == ray_workspace["target"]["address"]
    assert [n["alive"] for n in dev["nodes"]] == [True, True]
    assert sum(n["is_head"] for n in dev["nodes"]) == 1 and dev["cpus"] == 2 and dev["gpus"] == 0
    # both nodes on this machine: Ray advertises its routable address even for --node-ip-address=127.0.0.1
    assert len({n["address"] for n in dev["nodes"]}) == 1
    assert dev["memory_gb"] > 0 and dev["ray_version"]


def _job_file(root: Path) -> Path:
    data = root / "data"
    if not data.exists():
        from chattune.data import demo

        demo.write(data, rows=24)
    path = root / "ray-job.yaml"
    path.write_text(
        """model: tiny-test
experiment_name: ray
compute: dev
resources:
  instance_count: 2
  processes_per_instance: 1
data:
  train: data/train_sft.jsonl
  test: data/test_sft.jsonl
training:
  per_device_train_batch_size: 2
  max_seq_length: 128
  max_steps: 8
  logging_steps: 1
  save_strategy: steps
  save_steps: 4
  save_total_limit: 2
  evaluation_strategy: "no"
  seed: 7
optimization:
  apply_lora: true
  lora_r: 4
  merge_lora_weights: false  # registering logs the adapter only: quicker
evaluation:
  max_rows: 4
  max_new_tokens: 4
"""
    )
    return path


@pytest.fixture(scope="module")
def ray_job(ray_workspace: dict[str, Any]) -> dict[str, Any]:
    """A tiny-test job on the cluster's 2 Ray Train workers, and its adapter registered as `tiny-ray`."""
    run = ray_workspace["run"]
    started = time.monotonic()
    result = run("jobs", "create", "-f", str(_job_file(ray_workspace["root"])), "--stream", "--json", timeout=400)
    job = exact(JobSummary, parse_json(result))
    print(f"job on Ray: {time.monotonic() - started:.1f}s")
    assert job["status"] == "succeeded", result.stderr
    mv = parse_json(run("models", "register", "--job", job["id"], "--name", "tiny-ray", "--json"))
    return {"job": job, "log": result.stderr, "model": f"tiny-ray:{mv['version']}"}


def test_a_job_trains_on_two_ray_workers_and_registers_with_its_compute(
    ray_workspace: dict[str, Any], ray_job: dict[str, Any]
) -> None:
    run, job, log = ray_workspace["run"], ray_job["job"], ray_job["log"]
    assert "launching 2 Ray Train workers on compute dev" in log and "gloo on CPUs" in log
    final = parse_json(run("jobs", "show", job["id"], "--json"))
    steps = {s["name"]: s for s in final["steps"]}
    metrics = steps["finetune"]["outputs"]["metrics"]
    assert metrics["processes"] == 2 and metrics["compute"] == "dev" and metrics["global_steps"] == 8
    assert steps["evaluate"]["status"] == "succeeded" and steps["finetune"]["mlflow_run_id"]
    # rank 0's progress and metrics events, as a local job has them
    trained = [e["data"]["step"] for e in final["events"] if e["type"] == "metrics" and "loss" in e["data"]]
    assert trained == list(range(1, 9))
    assert "training 8,192 of" in log
    # the Trainer's checkpoints (save_total_limit 2), and Ray Train's copies of them (CheckpointConfig.num_to_keep)
    assert [c["step_number"] for c in final["checkpoints"]] == [4, 8]
    ray_run = Path(metrics["ray_run"])
    assert ray_run == ray_workspace["home"] / "jobs" / job["id"]
    kept = sorted(ray_run.glob("checkpoint_*/checkpoint/trainer_state.json"))
    assert sorted(json.loads(p.read_text())["global_step"] for p in kept) == [4, 8]

    # the trained adapter is the step's output: registered as for a local job, with the compute in lineage
    detail = parse_json(run("models", "show", ray_job["model"], "--json"))
    assert detail["lineage"]["compute"] == {"target": "dev", "kind": "ray", "workers": 2}


def test_a_preference_job_trains_with_dpo_on_two_ray_workers(ray_workspace: dict[str, Any]) -> None:
    """`task: preference` on the same Ray Train launcher: TRL's DPO trainer in 2 workers (gloo), rank 0's result."""
    from chattune.data import demo

    run, root = ray_workspace["run"], ray_workspace["root"]
    demo.write_preferences(root / "prefs", rows=20)
    path = root / "ray-dpo.yaml"
    path.write_text(
        _job_file(root)
        .read_text()
        .replace("data/train_sft.jsonl", "prefs/train_prefs.jsonl")
        .replace("data/test_sft.jsonl", "prefs/test_prefs.jsonl")
        .replace("experiment_name: ray", "experiment_name: ray_dpo\ntask: preference")
    )
    result = run("jobs", "create", "-f", str(path), "--stream", "--json", timeout=400)
    job = parse_json(result)
    assert job["status"] == "succeeded", result.stderr
    assert "launching 2 Ray Train workers on compute dev" in result.stderr and "DPO: beta 0.1, LoRA" in result.stderr
    steps = {s["name"]: s for s in parse_json(run("jobs", "show", job["id"], "--json"))["steps"]}
    metrics = steps["finetune"]["outputs"]["metrics"]
    assert metrics["processes"] == 2 and metrics["global_steps"] == 8 and "valid_rewards_accuracies" in metrics
    assert set(steps["evaluate"]["outputs"]["metrics"]["tuned"]) >= {"preference_accuracy", "reward_accuracy"}


def _train_workers(cluster: dict[str, Any]) -> list[psutil.Process]:
    """The cluster's Ray Train worker processes: descendants of its nodes titled ``ray::RayTrainWorker...``."""
    found = []
    for pid in cluster["pids"]:
        with contextlib.suppress(psutil.Error):
            for proc in psutil.Process(pid).children(recursive=True):
                with contextlib.suppress(psutil.Error):
                    if (proc.cmdline() or [""])[0].startswith("ray::RayTrainWorker"):
                        found.append(proc)
    return found


@pytest.mark.slow
def test_a_killed_worker_is_restarted_and_a_killed_driver_resumes_from_the_last_ray_checkpoint(
    ray_workspace: dict[str, Any],
) -> None:
    """Minutes on two loaded cores (four Ray Train start-ups): `-m slow` runs it.

    A training worker killed with SIGKILL: Ray Train restarts the worker group (FailureConfig.max_failures) from its
    last registered checkpoint. Then the driver (the job runner) killed: the job is failed on the next look, and
    `jobs resume` continues from Ray Train's last registered checkpoint to the same final step and the same test
    loss as an uninterrupted run (within 1e-4 relative).
    """
    run, home = ray_workspace["run"], ray_workspace["home"]
    path = _job_file(ray_workspace["root"])
    path.write_text(path.read_text().replace("max_steps: 8", "max_steps: 80") + "settings:\n  force_rerun: true\n")
    whole = parse_json(run("jobs", "create", "-f", str(path), "--stream", "--json", timeout=400))
    assert whole["status"] == "succeeded"
    job = exact(JobSummary, parse_json(run("jobs", "create", "-f", str(path), "--json")))
    job_dir = home / "jobs" / job["id"]
    snapshot = job_dir / "checkpoint_manager_snapshot.json"  # Ray Train's record of the checkpoints it registered

    def registered() -> int:
        with contextlib.suppress(OSError, ValueError, TypeError):
            return int(json.loads(snapshot.read_text())["latest_checkpoint_result"]["metrics"]["step"])
        return 0

    def log() -> str:
        return (job_dir / "job.log").read_text()

    _wait(lambda: registered() > 0, timeout=300, what="a first Ray Train checkpoint")
    cluster = ray_workspace["target"]["local_cluster"]
    workers = _train_workers(cluster)
    assert len(workers) == 2
    workers[-1].kill()  # SIGKILL one training worker
    _wait(lambda: "resuming from checkpoint-" in log(), timeout=300, what="Ray Train to restart the workers")
    restarted_from = int(log().split("resuming from checkpoint-", 1)[1].split()[0])
    assert restarted_from > 0
    _wait(lambda: registered() > restarted_from, timeout=300, what="a checkpoint after the restart")

    os.kill(parse_json(run("jobs", "show", job["id"], "--json"))["pid"], signal.SIGKILL)  # the driver
    _wait(lambda: parse_json(run("jobs", "show", job["id"], "--json"))["status"] == "failed", what="failed status")
    shown = parse_json(run("jobs", "show", job["id"], "--json"))
    assert shown["error"]["code"] == "runner_died"
    killed_at = registered()
    assert restarted_from < killed_at < 80
    _wait(lambda: not _train_workers(cluster), timeout=60, what="the workers to end with their driver")

    result = run("jobs", "resume", job["id"], "--stream", "--json", timeout=400)
    assert exact(JobSummary, parse_json(result))["status"] == "succeeded", result.stderr
    # Ray Train's last registered checkpoint (the Trainer may have written later ones it had not registered yet)
    assert f"resuming from checkpoint-{killed_at} " in result.stderr
    final = parse_json(run("jobs", "show", job["id"], "--json"))
    events = final["events"]
    resumed_at = next(i for i, e in enumerate(events) if e["message"].startswith("resume requested"))
    after = [e["data"]["step"] for e in events[resumed_at:] if e["type"] == "metrics" and "loss" in e["data"]]
    assert after[0] == killed_at + 1 and after[-1] == 80
    finetune = next(s for s in final["steps"] if s["name"] == "finetune")
    assert finetune["outputs"]["metrics"]["global_steps"] == 80

    # and it ends where the uninterrupted run of the same job and seed ended
    def test_loss(job_id: str) -> float:
        shown = parse_json(run("jobs", "show", job_id, "--json"))
        evaluate = next(s for s in shown["steps"] if s["name"] == "evaluate")
        return float(evaluate["outputs"]["metrics"]["tuned"]["test_loss"])

    interrupted, uninterrupted = test_loss(job["id"]), test_loss(whole["id"])
    print(f"Ray: worker kill + driver kill + resume: test loss {interrupted:.6f} vs {uninterrupted:.6f} uninterrupted")
    assert interrupted == pytest.approx(uninterrupted, rel=1e-4)


@pytest.mark.slow
def test_cancel_stops_every_ray_train_worker(ray_workspace: dict[str, Any]) -> None:
    run, home = ray_workspace["run"], ray_workspace["home"]
    path = _job_file(ray_workspace["root"])
    text = path.read_text().replace("max_steps: 8", "max_steps: 5000").replace("save_steps: 4", "save_steps: 1000")
    path.write_text(text)
    job = exact(JobSummary, parse_json(run("jobs", "create", "-f", str(path), "--json")))
    log = home / "jobs" / job["id"] / "job.log"
    _wait(lambda: log.exists() and "  step 2/" in log.read_text(), timeout=300, what="training to start")
    assert run("jobs", "cancel", job["id"]).returncode == 0
    _wait(lambda: parse_json(run("jobs", "show", job["id"], "--json"))["status"] == "cancelled", what="cancelled")
    steps = {s["name"]: s for s in parse_json(run("jobs", "show", job["id"], "--json"))["steps"]}
    assert steps["finetune"]["status"] == "cancelled" and steps["evaluate"]["status"] == "skipped"
    _wait(lambda: not _train_workers(ray_workspace["target"]["local_cluster"]), timeout=60, what="the workers to end")


@pytest.mark.slow
def test_a_two_worker_ray_run_matches_a_two_process_torchrun_run(ray_workspace: dict[str, Any]) -> None:
    """The same job and seed on 2 Ray Train workers and on 2 local torchrun processes: the same loss at every step.

    Both are DDP over gloo with the Trainer's DistributedSampler, so each rank sees the same batches in both runs;
    only the order of the floating-point sums in the all-reduce may differ.
    """
    run = ray_workspace["run"]
    path = _job_file(ray_workspace["root"])
    local = ray_workspace["root"] / "local-job.yaml"
    local.write_text(
        path.read_text()
        .replace("compute: dev\n", "")
        .replace("resources:\n  instance_count: 2\n  processes_per_instance: 1\n", "")
        .replace("  lora_r: 4\n", "  lora_r: 4\n  number_of_gpu_to_use_finetuning: 2\n")
    )

    def losses(job_file: Path) -> dict[int, float]:
        job = parse_json(run("jobs", "create", "-f", str(job_file), "--stream", "--json", timeout=400))
        assert job["status"] == "succeeded"
        events = parse_json(run("jobs", "show", job["id"], "--json"))["events"]
        return {e["data"]["step"]: e["data"]["loss"] for e in events if e["type"] == "metrics" and "loss" in e["data"]}

    on_ray, on_torchrun = losses(path), losses(local)
    assert sorted(on_ray) == sorted(on_torchrun) == list(range(1, 9))
    worst = max(abs(on_ray[s] - on_torchrun[s]) / abs(on_torchrun[s]) for s in on_ray)
    print(f"Ray vs torchrun, 8 steps: largest relative loss difference {worst:.2e}")
    assert worst < 1e-4


def test_a_one_worker_ray_run_trains_as_the_local_runner_does(ray_workspace: dict[str, Any]) -> None:
    """One Ray Train worker leaves Ray's process group of one (chattune.pipeline.ray_launch): no DDP, the local code.

    The same job and seed with one worker on Ray and in the local runner: the same loss at every step, and Ray's
    checkpoints and report still work without the group. The Ray worker computes on one thread (one CPU per process
    here) and the local runner on both cores, so the sums may round differently: the same tolerance as above.
    """
    run, root = ray_workspace["run"], ray_workspace["root"]
    one = _job_file(root).read_text().replace("instance_count: 2", "instance_count: 1")
    ray_file, local_file = root / "ray-one.yaml", root / "local-one.yaml"
    ray_file.write_text(one.replace("experiment_name: ray", "experiment_name: ray_one"))
    local_file.write_text(
        one.replace("compute: dev\n", "")
        .replace("resources:\n  instance_count: 1\n  processes_per_instance: 1\n", "")
        .replace("experiment_name: ray", "experiment_name: local_one")
    )

    def losses(job_file: Path) -> tuple[dict[int, float], str]:
        result = run("jobs", "create", "-f", str(job_file), "--stream", "--json", timeout=400)
        job = parse_json(result)
        assert job["status"] == "succeeded", result.stderr
        shown = parse_json(run("jobs", "show", job["id"], "--json"))
        assert [c["step_number"] for c in shown["checkpoints"]] == [4, 8]
        events = [e["data"] for e in shown["events"] if e["type"] == "metrics" and "loss" in e["data"]]
        return {e["step"]: e["loss"] for e in events}, result.stderr

    (on_ray, log), (local, _) = losses(ray_file), losses(local_file)
    assert "launching 1 Ray Train worker on compute dev (" in log and "one process, no process group" in log
    assert sorted(on_ray) == sorted(local) == list(range(1, 9))
    worst = max(abs(on_ray[s] - local[s]) / abs(local[s]) for s in on_ray)
    print(f"1 Ray worker vs the local runner, 8 steps: largest relative loss difference {worst:.2e}")
    assert worst < 1e-4


def _cluster_tree(cluster: dict[str, Any]) -> list[psutil.Process]:
    """The processes of the test's own cluster: its daemons and their descendants (never another Ray on the machine).
    A process that ends while the tree is read is left out, not the whole tree."""
    found = []
    for proc in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if proc.pid in cluster["pids"] or any(p.pid in cluster["pids"] for p in proc.parents()):
                found.append(proc)
    return found


def _replicas(cluster: dict[str, Any], app: str) -> list[psutil.Process]:
    """The Serve replica processes of application ``app``: titled ``ray::ServeReplica:APP:chat``."""
    found = []
    for proc in _cluster_tree(cluster):
        with contextlib.suppress(psutil.Error):
            if (proc.cmdline() or [""])[0].startswith(f"ray::ServeReplica:{app}:"):
                found.append(proc)
    return found


def _kill_a_replica(cluster: dict[str, Any], app: str, killed: list[int]) -> None:
    """SIGKILL one replica of ``app`` (waiting for one to be seen); its pid goes to ``killed``."""
    deadline = time.monotonic() + 30
    while not (replicas := _replicas(cluster, app)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert replicas, f"no replica of {app} to kill"
    replicas[0].kill()
    killed.append(replicas[0].pid)


def _running(dep: dict[str, Any]) -> int:
    return sum(counts.get("RUNNING", 0) for counts in dep["instances"][0]["replicas"].values())


def test_a_deployment_on_ray_serve_answers_scales_survives_a_replica_kill_and_is_deleted(
    ray_workspace: dict[str, Any], ray_job: dict[str, Any]
) -> None:
    """`deployments create --compute dev --instances 2`: a Ray Serve application of two replicas behind the
    endpoint's own gateway (keys, routing). Serve's proxy is on loopback and refuses what lacks the instance token;
    a replica killed with SIGKILL under load is replaced by Serve; `--instances 1` scales it in place; deleting the
    endpoint removes the application from the cluster."""
    import openai

    run = ray_workspace["run"]
    cluster = ray_workspace["target"]["local_cluster"]
    keys = parse_json(run("endpoints", "create", "ray-ep", "--json"))["keys"]
    started = time.monotonic()
    deploy = ("deployments", "create", "--endpoint", "ray-ep", "--name", "blue", "--model", ray_job["model"])
    settings = ("--instances", "2", "--max-concurrent-requests-per-instance", "2", "--request-timeout-ms", "60000")
    created = run(*deploy, "--compute", "dev", *settings, "--json")
    dep = exact(DeploymentPublic, parse_json(created))
    print(f"Serve deployment ready: {time.monotonic() - started:.1f}s")
    app = "chattune.ray-ep.blue"
    try:
        assert dep["state"] == "Succeeded" and dep["compute"] == "dev"
        assert len(dep["instances"]) == 1 and _running(dep) == 2 and dep["instances"][0]["prefix"] == "/ray-ep/blue"
        assert len(_replicas(cluster, app)) == 2
        shown = parse_json(run("endpoints", "traffic", "ray-ep", "blue=100", "--json"))
        base = shown["scoring_uri"].removesuffix("/score")
        client = openai.OpenAI(base_url=f"{base}/v1", api_key=keys["primary_key"], max_retries=0)
        chat = client.chat.completions.create(
            model=ray_job["model"], messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert chat.choices[0].message.content is not None and chat.usage is not None
        stream = client.chat.completions.create(
            model=ray_job["model"], messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
        )
        assert [c.choices[0].finish_reason for c in stream if c.choices][-1] in ("length", "stop")

        # Serve's proxy: loopback only, and the instance token required (an endpoint key is not one)
        serve_port = ray_workspace["target"]["serve_port"]
        ours = {p.pid for p in _cluster_tree(cluster)}
        listeners = {
            c.laddr.ip
            for c in psutil.net_connections("tcp")
            if c.status == "LISTEN" and c.laddr.port == serve_port and c.pid in ours
        }
        assert listeners == {"127.0.0.1"}
        token = (ray_workspace["home"] / "endpoints" / "ray-ep" / INSTANCE_TOKEN_FILE).read_text(encoding="utf-8")
        refused = walk_instance_routes(f"http://127.0.0.1:{serve_port}/ray-ep/blue", token, keys["primary_key"])
        print(f"Serve proxy: {refused} requests without the gateway's token refused 401")

        # a replica killed with SIGKILL under load: Serve replaces it
        killed: list[int] = []
        outcomes = _load_while(lambda: _kill_a_replica(cluster, app, killed), base, keys["primary_key"], requests=60)
        assert len(killed) == 1 and not psutil.pid_exists(killed[0])
        failed = [o for o in outcomes if o != 200]
        gateway_log = (ray_workspace["home"] / "endpoints" / "ray-ep" / "gateway.log").read_text(encoding="utf-8")
        retried = gateway_log.count("Serve failed before the app answered")
        print(
            f"Serve replica SIGKILL under load: {len(failed)} of {len(outcomes)} failed, "
            f"{retried} retried by the gateway"
        )
        assert len(failed) == 0
        _wait(lambda: len(_replicas(cluster, app)) == 2, timeout=120, what="Serve to replace the killed replica")

        scaled = exact(
            DeploymentPublic,
            parse_json(
                run("deployments", "update", "--endpoint", "ray-ep", "--name", "blue", "--instances", "1", "--json")
            ),
        )
        assert scaled["state"] == "Succeeded" and scaled["instance_count"] == 1 and _running(scaled) == 1
        _wait(lambda: len(_replicas(cluster, app)) == 1, timeout=60, what="Serve to stop a replica")
    finally:
        deleted = run("endpoints", "delete", "ray-ep")
    assert deleted.returncode == 0, deleted.stderr
    _wait(lambda: not _replicas(cluster, app), timeout=60, what="the application's replicas to stop")


def _load_while(action: Callable[[], Any], base: str, key: str, requests: int) -> list[int | str]:
    """``requests`` chat completions from 4 threads through the gateway, ``action`` done after the first 8 answers;
    each request's status (or exception name)."""
    import threading

    import httpx

    outcomes: list[int | str] = []
    lock = threading.Lock()
    sent = iter(range(requests))
    body = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}

    def client() -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=90) as http:
            while True:
                with lock:
                    if next(sent, None) is None:
                        return
                try:
                    status: int | str = http.post("/v1/chat/completions", json=body).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                with lock:
                    outcomes.append(status)
                    if len(outcomes) == 8:
                        action()

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outcomes


@pytest.mark.slow
def test_an_autoscaled_ray_deployment_adds_a_replica_under_load(
    ray_workspace: dict[str, Any], ray_job: dict[str, Any]
) -> None:
    """`--min-instances 1 --max-instances 2 --target-requests-per-instance 1`: Serve starts one replica and adds the
    second while 4 clients keep more than one request in flight per replica (Serve's upscale delay: 30 s)."""
    run = ray_workspace["run"]
    cluster = ray_workspace["target"]["local_cluster"]
    keys = parse_json(run("endpoints", "create", "auto-ep", "--json"))["keys"]
    app = "chattune.auto-ep.blue"
    try:
        scale = ("--min-instances", "1", "--max-instances", "2", "--target-requests-per-instance", "1")
        deploy = ("deployments", "create", "--endpoint", "auto-ep", "--name", "blue", "--model", ray_job["model"])
        dep = exact(
            DeploymentPublic, parse_json(run(*deploy, "--compute", "dev", *scale, "--max-concurrent", "4", "--json"))
        )
        assert dep["autoscale"] == {"min_instances": 1, "max_instances": 2, "target_requests_per_instance": 1.0}
        assert _running(dep) == 1 and len(_replicas(cluster, app)) == 1
        base = parse_json(run("endpoints", "traffic", "auto-ep", "blue=100", "--json"))["scoring_uri"]
        base = base.removesuffix("/score")
        started = time.monotonic()
        outcomes: list[int | str] = []
        while len(_replicas(cluster, app)) < 2 and time.monotonic() - started < 180:
            outcomes += _load_while(lambda: None, base, keys["primary_key"], requests=16)
        print(f"autoscaled to 2 replicas after {time.monotonic() - started:.0f}s of load; {len(outcomes)} requests")
        assert len(_replicas(cluster, app)) == 2
        assert all(o == 200 for o in outcomes), outcomes
        shown = parse_json(run("deployments", "list", "--endpoint", "auto-ep", "--json"))[0]
        _wait(
            lambda: _running(parse_json(run("deployments", "list", "--endpoint", "auto-ep", "--json"))[0]) == 2,
            timeout=60,
            what="the status file to show 2 replicas",
        )
        assert shown["compute"] == "dev"
        refused = run("deployments", "update", "--endpoint", "auto-ep", "--name", "blue", "--instances", "1")
        assert refused.returncode == 2 and "autoscales between 1 and 2" in refused.stderr
    finally:
        run("endpoints", "delete", "auto-ep")
    _wait(lambda: not _replicas(cluster, app), timeout=60, what="the application's replicas to stop")
