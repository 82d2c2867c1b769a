"""`chattune` entry point: builds the command tree and maps errors to exit codes (2 user, 1 internal, 130 ^C)."""

from __future__ import annotations

import sys

import click
import typer

from chattune.cli import compute, data, deployments, endpoints, jobs, models, quickstart
from chattune.cli.output import err, show_error
from chattune.errors import ChattuneError

app = typer.Typer(
    name="chattune", help="Fine-tune and serve chat models, self-hosted.", no_args_is_help=True,
    pretty_exceptions_enable=False, add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(compute.app, name="compute")
app.add_typer(data.app, name="data")
app.add_typer(jobs.app, name="jobs")
app.add_typer(endpoints.app, name="endpoints")
app.add_typer(deployments.app, name="deployments")
app.command("quickstart")(quickstart.quickstart)


def main() -> None:
    try:
        app(standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as exc:  # usage errors: unknown flag, missing argument
        exc.show()
        sys.exit(exc.exit_code)
    except ChattuneError as exc:
        show_error(exc)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
