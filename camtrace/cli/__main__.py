"""``python -m camtrace.cli``."""

from camtrace.cli import main

main()
