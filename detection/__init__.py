"""camtrace.detection."""
