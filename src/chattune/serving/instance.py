"""Process entry of one deployment instance: ``python -m chattune.serving.instance --fd N ...``.

The parent binds the loopback socket and passes its descriptor, so the port is known before the child starts and
no other process can take it in between. The gateway's token comes in the environment (``CHATTUNE_INSTANCE_TOKEN``);
every route but the health routes requires it.
"""

from __future__ import annotations

import argparse
import logging
import os

from chattune.processes import serve
from chattune.serving.app import build_engine, create_app
from chattune.serving.keys import INSTANCE_TOKEN_ENV


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--base", required=True, help="base model directory")
    parser.add_argument("--adapter", default=None, help="LoRA adapter directory")
    parser.add_argument("--name", required=True, help="served model name (NAME:VERSION)")
    parser.add_argument("--base-name", required=True)
    parser.add_argument("--max-new-tokens-cap", type=int, default=1024)
    parser.add_argument(
        "--extra-adapter", action="append", default=[], help="NAME=PATH: another LoRA adapter on the same base"
    )
    parser.add_argument("--template-sha256", default=None, help="refuse to serve unless the chat template matches")
    parser.add_argument("--max-batch-size", type=int, default=32, help="sequences sharing one forward pass at most")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    token = os.environ.pop(INSTANCE_TOKEN_ENV, "")
    if not token:
        parser.error(f"{INSTANCE_TOKEN_ENV} is not set: an instance serves behind its endpoint's gateway (it sets it)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve(create_app(build_engine(args), token=token), args.fd, log_level="info", access_log=True)


if __name__ == "__main__":
    main()
