"""camtrace.storage."""
