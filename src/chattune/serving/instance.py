"""Process entry of one deployment instance: ``python -m chattune.serving.instance --fd N ...``.

The parent binds the loopback socket and passes its descriptor, so the port is known before the child starts and
no other process can take it in between. The gateway's token comes in the environment (``CHATTUNE_INSTANCE_TOKEN``);
every route but the health routes requires it. The deployment's settings (engine batch size, new-token cap) come in
the environment too (``CHATTUNE_DEPLOYMENT_SETTINGS``, DeploymentSettings as JSON; defaults when unset).
"""

from __future__ import annotations

import argparse
import logging
import os

from chattune.entities import DeploymentSettings
from chattune.processes import serve
from chattune.serving.app import create_app
from chattune.serving.engine import Engine
from chattune.serving.keys import INSTANCE_TOKEN_ENV

SETTINGS_ENV = "CHATTUNE_DEPLOYMENT_SETTINGS"


def settings_from_env() -> DeploymentSettings:
    """The deployment's settings as its gateway passed them; defaults when run without one (benchmarks)."""
    text = os.environ.get(SETTINGS_ENV)
    return DeploymentSettings.model_validate_json(text) if text else DeploymentSettings()


def build_engine(args: argparse.Namespace, settings: DeploymentSettings) -> Engine:
    """The engine for the model the arguments name, sized by the deployment's settings."""
    extras = dict(item.split("=", 1) for item in args.extra_adapter)
    return Engine(
        args.base,
        args.adapter,
        args.name,
        args.base_name,
        settings=settings,
        extra_adapters=extras,
        template_sha256=args.template_sha256,
    )


def model_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the arguments that name the served model (an instance's and a Ray Serve replica's) to ``parser``."""
    parser.add_argument("--base", required=True, help="base model directory")
    parser.add_argument("--adapter", default=None, help="LoRA adapter directory")
    parser.add_argument("--name", required=True, help="served model name (NAME:VERSION)")
    parser.add_argument("--base-name", required=True)
    parser.add_argument(
        "--extra-adapter", action="append", default=[], help="NAME=PATH: another LoRA adapter on the same base"
    )
    parser.add_argument("--template-sha256", default=None, help="refuse to serve unless the chat template matches")
    return parser


def main() -> None:
    """Serve one instance on the socket the parent bound."""
    parser = model_arguments(argparse.ArgumentParser(description=__doc__))
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    token = os.environ.pop(INSTANCE_TOKEN_ENV, "")
    if not token:
        parser.error(f"{INSTANCE_TOKEN_ENV} is not set: an instance serves behind its endpoint's gateway (it sets it)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    engine = build_engine(args, settings_from_env())
    serve(create_app(engine, token=token), args.fd, log_level="info", access_log=True)


if __name__ == "__main__":
    main()
