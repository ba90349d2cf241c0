"""camtrace.workers."""
