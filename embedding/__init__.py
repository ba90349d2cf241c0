"""camtrace.embedding."""
