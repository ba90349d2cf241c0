"""camtrace: find people in surveillance video."""

__version__ = "0.1.0"
