"""camtrace.api."""
