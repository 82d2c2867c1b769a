"""A deployment on a Ray compute target: a Ray Serve application whose replicas run chattune's serving app.

Each replica is ``ChatReplica``: it loads the engine in its constructor (Serve routes to a replica only once it is
constructed, so readiness is "the model is loaded"), then serves the very app a local instance serves
(``chattune.serving.app.create_app``: the same routes, wire protocol, errors, and the gateway's instance token, since
Serve's proxy checks no credential). Serve's health check calls ``check_health`` every liveness period.

``python -m chattune.serving.ray_serve --address A --app NAME --route-prefix /EP/DEP --port P -- MODEL ARGS`` is
what an endpoint's gateway runs for such a deployment, in place of instance processes: a Ray driver that deploys the
application (or updates it in place: a new replica count or autoscaling bounds) with Serve's HTTP proxy on the head
only, bound to ``--host`` (loopback by default), then stays and writes each change of the application's status to
the deployment's log. The gateway supervises that driver as it supervises an instance (restarted when it exits) and
probes and calls the application through Serve's proxy at ``http://HOST:PORT/EP/DEP``. The application outlives its
driver (Serve's controller is detached); ``--delete`` removes it, as deleting the deployment or its endpoint does.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from chattune.entities import DeploymentSettings
from chattune.errors import ProcessError
from chattune.serving.keys import INSTANCE_TOKEN_ENV

log = logging.getLogger("chattune.ray_serve")

STATUS_POLL_S = 2.0
DELETE_TIMEOUT_S = 120.0


def app_name(endpoint: str, deployment: str) -> str:
    """The Serve application of a deployment (endpoint and deployment names hold no '.')."""
    return f"chattune.{endpoint}.{deployment}"


def route_prefix(endpoint: str, deployment: str) -> str:
    """The path under which Serve's proxy routes to a deployment's application."""
    return f"/{endpoint}/{deployment}"


class ChatReplica:
    """One Serve replica of a deployment: chattune's engine and serving app.

    Args:
        model_args: The model arguments of a local instance (``--base``, ``--adapter``, ``--name``...).
        settings_json: The deployment's ``DeploymentSettings`` as JSON (engine batch size, new-token cap).
        token: The endpoint's instance token, required on every route but the health probes.

    Its constructor is a coroutine (Serve awaits it): the model loads in a thread while the replica's loop runs.
    """

    async def __init__(self, model_args: list[str], settings_json: str, token: str) -> None:  # type: ignore[misc]
        import asyncio

        from chattune.serving.instance import build_engine, model_arguments

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        args = model_arguments(argparse.ArgumentParser(prog="replica")).parse_args(model_args)
        self.engine = build_engine(args, DeploymentSettings.model_validate_json(settings_json))
        # Here, so that Serve counts the replica as started only once it can answer; in a thread, as in a local
        # instance (the warm-up runs an event loop of its own, and the replica's keeps serving Serve's calls).
        await asyncio.to_thread(self.engine.load)
        if self.engine.failed:
            raise RuntimeError(f"model failed to load: {self.engine.failed}")
        self.token = token

    def __serve_build_asgi_app__(self) -> Any:
        """The replica's ASGI app: a local instance's app over this replica's engine."""
        from chattune.serving.app import create_app

        return create_app(self.engine, token=self.token)

    def check_health(self) -> None:
        """Serve's health check (every ``liveness_probe.period``): raises when the engine cannot serve."""
        if self.engine.failed or not self.engine.ready.is_set():
            raise RuntimeError(self.engine.failed or "the engine is not ready")


def serve_options(settings: DeploymentSettings) -> dict[str, Any]:
    """The Serve deployment options of a deployment's settings.

    ``instance_count`` -> ``num_replicas`` (with autoscaling: the initial replicas, within the bounds);
    ``max_concurrent_requests_per_instance`` -> ``max_ongoing_requests``; ``cpus_per_instance`` -> the replica's
    ``num_cpus``; the liveness probe's period and timeout ->
    Serve's health check; the autoscaling bounds and target -> ``autoscaling_config``.
    """
    options: dict[str, Any] = {
        "max_ongoing_requests": settings.max_concurrent_requests_per_instance,
        "health_check_period_s": settings.liveness_probe.period,
        "health_check_timeout_s": settings.liveness_probe.timeout,
        # Ray sets a replica's OMP_NUM_THREADS (so its torch threads) from its CPUs
        "ray_actor_options": {"num_cpus": settings.cpus_per_instance},
    }
    scale = settings.autoscale
    if scale is None:
        options["num_replicas"] = settings.instance_count
    else:
        options["autoscaling_config"] = {
            "min_replicas": scale.min_instances,
            "max_replicas": scale.max_instances,
            "initial_replicas": min(max(settings.instance_count, scale.min_instances), scale.max_instances),
            "target_ongoing_requests": scale.target_requests_per_instance,
        }
    return options


def _status(app: str) -> dict[str, Any] | None:
    """The application's status and each deployment's replica states, as Serve reports them; None when it is gone."""
    from ray import serve

    found = serve.status().applications.get(app)
    if found is None:
        return None
    return {
        "status": str(found.status.value if hasattr(found.status, "value") else found.status),
        "message": found.message,
        "replicas": {
            name: {str(k.value if hasattr(k, "value") else k): v for k, v in dep.replica_states.items()}
            for name, dep in found.deployments.items()
        },
    }


def deploy(ns: argparse.Namespace, model_args: list[str], settings: DeploymentSettings, token: str) -> None:
    """Deploy (or update) the application on the cluster the driver is connected to; return once it runs."""
    from ray import serve

    serve.start(proxy_location="HeadOnly", http_options={"host": ns.host, "port": ns.port})
    replica = serve.deployment(name="chat", **serve_options(settings))(serve.ingress()(ChatReplica))
    log.info("deploying %s at %s: %s", ns.app, ns.route_prefix, serve_options(settings))
    serve.run(
        replica.bind(model_args, settings.model_dump_json(), token),
        name=ns.app,
        route_prefix=ns.route_prefix,
    )
    log.info("%s is running", ns.app)


def watch(app: str, settings: DeploymentSettings, status_file: Path) -> int:
    """Write each change of the application's status to the log and ``status_file`` until it is gone (exit 1).

    The file (JSON: ``status``, ``message``, ``replicas``, and the ``settings`` deployed) tells the gateway, which
    never connects to Ray itself, when Serve runs the replica count it asked for.
    """
    last = None
    while True:
        now = _status(app)
        if now != last:
            log.info("%s: %s", app, json.dumps(now))
            tmp = status_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({**(now or {}), "settings": settings.model_dump_json()}), encoding="utf-8")
            tmp.replace(status_file)
            last = now
        if now is None:
            return 1
        time.sleep(STATUS_POLL_S)


def read_status(path: Path) -> dict[str, Any] | None:
    """The last status a driver wrote (``watch``); None when there is none yet."""
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


def delete_app(address: str, app: str, env: dict[str, str], log_path: str | None = None) -> None:
    """Remove the application ``app`` from the cluster at ``address`` (a driver process of its own).

    Raises:
        ProcessError: The cluster did not confirm the deletion.
    """
    from chattune.processes import child_env

    cmd = [sys.executable, "-m", "chattune.serving.ray_serve", "--address", address, "--app", app, "--delete"]
    try:
        done = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=child_env(**env),
            timeout=DELETE_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise ProcessError(f"Ray Serve application {app!r} not deleted within {DELETE_TIMEOUT_S:.0f}s") from exc
    if log_path:
        with open(log_path, "a", encoding="utf-8") as out:
            out.write(done.stdout + done.stderr)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise ProcessError(f"Ray Serve application {app!r} not deleted: {tail}")


def main(argv: list[str] | None = None) -> int:
    """Deploy and watch a deployment's application (or ``--delete`` it); see the module's docstring."""
    argv = sys.argv[1:] if argv is None else argv
    own, model_args = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m chattune.serving.ray_serve", description=__doc__.split("\n")[0])
    parser.add_argument("--address", required=True, help="the Ray cluster's address")
    parser.add_argument("--app", required=True, help="the Serve application's name")
    parser.add_argument("--route-prefix", help="where Serve's proxy routes to it")
    parser.add_argument("--host", default="127.0.0.1", help="the interface Serve's proxy binds")
    parser.add_argument("--port", type=int, default=8000, help="the port of Serve's proxy")
    parser.add_argument("--status-file", type=Path, help="where to keep the application's status (JSON)")
    parser.add_argument("--delete", action="store_true", help="remove the application and exit")
    ns = parser.parse_args(own)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import ray
    from ray import serve

    ray.init(address=ns.address, logging_level=logging.WARNING, configure_logging=False, log_to_driver=False)
    if ns.delete:
        serve.delete(ns.app)
        log.info("%s deleted", ns.app)
        return 0
    token = os.environ.pop(INSTANCE_TOKEN_ENV, "")
    if not token or not ns.route_prefix or not ns.status_file:
        parser.error(f"--route-prefix, --status-file and {INSTANCE_TOKEN_ENV} are needed (the gateway gives them)")
    from chattune.serving.instance import settings_from_env

    settings = settings_from_env()
    deploy(ns, model_args, settings, token)
    return watch(ns.app, settings, ns.status_file)


if __name__ == "__main__":
    sys.exit(main())
