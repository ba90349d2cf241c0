"""camtrace.training."""
