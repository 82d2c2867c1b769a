"""`chattune` entry point: builds the command tree and maps errors to exit codes (2 user, 1 internal, 130 ^C)."""

from __future__ import annotations

import os
import sys

import typer

from chattune import versions
from chattune.cli import cache, compute, data, deployments, endpoints, jobs, models, quickstart, studio
from chattune.cli.output import err, show_error
from chattune.errors import ChattuneError, storage_error

app = typer.Typer(
    name="chattune",
    help="Fine-tune and serve chat models, self-hosted.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(compute.app, name="compute")
app.add_typer(data.app, name="data")
app.add_typer(jobs.app, name="jobs")
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(deployments.app, name="deployments")
app.add_typer(cache.app, name="cache")
app.command("quickstart")(quickstart.quickstart)
app.command("studio")(studio.studio)


def main() -> None:
    """The ``chattune`` command: run the CLI and exit with its code."""
    # As for chattune's child processes (chattune.processes.child_env): no MLflow usage telemetry unless the
    # user's environment asks for it. Set before anything imports MLflow or starts a thread.
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        versions.check()
        # Without standalone mode, click returns the code of a typer.Exit instead of exiting.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except typer.exceptions.TyperException as exc:  # usage errors: unknown flag, missing argument (exit 2)
        show = getattr(exc, "show", None)
        if callable(show):
            show()
        else:
            err.print(str(exc))
        sys.exit(getattr(exc, "exit_code", 2))
    except ChattuneError as exc:
        show_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a full or read-only workspace, wherever a library met it: a clear error
        storage = storage_error(exc)
        if storage is None:
            raise
        show_error(storage)
        sys.exit(storage.exit_code)


if __name__ == "__main__":
    main()
