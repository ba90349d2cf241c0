"""The `camtrace` command line: a thin shell over the stages, one module per command group."""

from camtrace.cli import access, index, ingest, models, search, tools, watch  # noqa: F401 (they add their commands)
from camtrace.cli.base import cli


def main() -> None:
    cli(prog_name="camtrace")


__all__ = ["cli", "main"]
