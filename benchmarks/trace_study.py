"""Trace quality on an ingested synthetic site, part by part (used by ``bench_quality.py``).

Every figure is measured against the ground truth of the test footage: each indexed track has the identity its
boxes overlap most (quality_eval.identity_of_track). For each person found, the seed is their longest track; a
trace should return every other track of theirs, on any camera, and nothing else (the path's steps and the
tracks merged into them; alternatives are not part of the answer).

- ``trace_rows``: precision, recall and F1 for each way of building a trace (camtrace.search.trace.TraceMethod):
  cosine threshold, calibrated appearance, + camera links, + the path.
- ``investigator_confirms``: an investigator works through some people's traces, confirming the steps that are
  the person and rejecting those that are not (two passes: confirmed steps bring new candidates); afterwards the
  other people's traces are measured again: what verdicts teach beyond their own pairs.
- ``calibration``: the probability re-id gives each candidate on the other cameras, against how often such a
  candidate is the person (reliability table, expected calibration error).
- ``http_trace_figures`` and ``cli_agrees``: the same traces through ``camtrace serve`` and ``camtrace trace``.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path

from quality_eval import reliability, trace_figures_over

BENCH_USER = "bench"


def seeds_by_person(services, identities: Mapping[str, str | None]) -> dict[str, str]:
    """Each person's longest track (most boxes, then earliest id): where an investigator would start."""
    tracks = services.db.tracks_by_ids([t for t, who in identities.items() if who is not None])
    seeds: dict[str, str] = {}
    for track_id, who in sorted(identities.items()):
        if who is None or track_id not in tracks:
            continue
        best = seeds.get(who)
        if best is None or tracks[track_id].n_boxes > tracks[best].n_boxes:
            seeds[who] = track_id
    return seeds


def wanted_tracks(seeds: Mapping[str, str], identities: Mapping[str, str | None]) -> dict[str, set[str]]:
    return {seed: {t for t, who in identities.items() if who == person and t != seed} for person, seed in seeds.items()}


def returned_tracks(trace) -> set[str]:
    """The tracks a trace names as the person: its path steps and the tracks merged into them, minus the seed."""
    steps = trace.path if hasattr(trace, "path") else [s for s in trace["steps"] if s["status"] != "alternative"]
    found = set()
    for step in steps:
        step = step if isinstance(step, Mapping) else vars(step)
        found.add(step["track_id"])
        found.update(step.get("merged_track_ids") or ())
    return found - {trace.seed_track_id if hasattr(trace, "seed_track_id") else trace["seed_track_id"]}


def trace_row(search, seeds: Mapping[str, str], identities, method, min_probability: float) -> dict:
    returned = {
        seed: returned_tracks(search.trace(seed, min_probability=min_probability, method=method)) for seed in seeds.values()
    }
    return trace_figures_over(returned, wanted_tracks(seeds, identities))


def trace_rows(search, seeds, identities, bar: float) -> dict[str, dict]:
    """Each part of a trace added in turn (one process, one index: only the trace's method differs); the parts
    that speak in probabilities at ``bar`` (CAMTRACE_TRACE_MIN_SCORE), the cosine one at the old 0.7."""
    from camtrace.search.trace import TraceMethod

    return {
        "cosine >= 0.7": trace_row(search, seeds, identities, TraceMethod.SCORE, 0.7),
        "+ calibration": trace_row(search, seeds, identities, TraceMethod.APPEARANCE, bar),
        "+ camera links": trace_row(search, seeds, identities, TraceMethod.LINKS, bar),
        "+ path": trace_row(search, seeds, identities, TraceMethod.PATH, bar),
    }


def investigator_confirms(search, seeds: Mapping[str, str], identities, people: Iterable[str], passes: int = 2) -> int:
    """Verdicts on every step and alternative of these people's traces, as the ground truth says; returns how many."""
    given = 0
    for _ in range(passes):
        for person in people:
            seed = seeds[person]
            trace = search.trace(seed)
            for step in trace.steps:
                for track in (step.track_id, *step.merged_track_ids):
                    if step.status in ("seed", "confirmed") or track == seed:
                        continue
                    verdict = "same" if identities.get(track) == person else "different"
                    search.feedback(seed, track, verdict, user=BENCH_USER)
                    given += 1
    return given


def calibration(search, identities: Mapping[str, str | None], limit: int = 20) -> dict:
    """Re-id's probability for each candidate on other cameras (every matched track as the query) against truth."""
    predicted, outcome = [], []
    for track, person in sorted(identities.items()):
        if person is None:
            continue
        for result in search.reid(track, limit=limit):
            predicted.append(float(result.probability or 0.0))
            outcome.append(identities.get(result.track_id) == person)
    return reliability(predicted, outcome)


# Through the command line and the HTTP API ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def camtrace(env: dict, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "camtrace.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, check=True
    )


def http_trace_figures(env: dict, seeds: Mapping[str, str], identities) -> dict:
    """Every seed's trace from ``camtrace serve`` on default settings (GET /api/trace/<seed>) with a token."""
    users = json.loads(camtrace(env, "user", "list", "--json").stdout)
    if not any(u.get("username") == BENCH_USER for u in users):
        camtrace(env, "user", "add", BENCH_USER, "--role", "investigator")
    token = json.loads(camtrace(env, "token", "create", BENCH_USER, "--json").stdout)["token"]
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "camtrace.cli", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/healthz", timeout=2)
                break
            except OSError:
                time.sleep(0.2)
        returned = {}
        for seed in seeds.values():
            request = urllib.request.Request(
                f"{base}/api/trace/{urllib.request.quote(seed, safe='')}", headers={"Authorization": f"Bearer {token}"}
            )
            with urllib.request.urlopen(request, timeout=120) as answer:
                returned[seed] = returned_tracks(json.loads(answer.read()))
    finally:
        server.terminate()
        server.wait(timeout=30)
    return trace_figures_over(returned, wanted_tracks(seeds, identities))


def cli_agrees(env: dict, search, seeds: Mapping[str, str], count: int = 4) -> tuple[int, int]:
    """How many of the first ``count`` seeds `camtrace trace --json` answers with the path the stage gives."""
    agree = 0
    chosen = list(seeds.values())[:count]
    for seed in chosen:
        printed = json.loads(camtrace(env, "trace", seed, "--json").stdout)
        agree += returned_tracks(printed) == returned_tracks(search.trace(seed))
    return agree, len(chosen)


def environment(data_dir: Path, settings) -> dict:
    """The variables that make a command-line camtrace use these settings (models, data dir, detector size)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMTRACE_")}
    names = (
        "data_dir",
        "detector_model",
        "detector_imgsz",
        "embed_model",
        "embed_processor",
        "runtime",
        "crops_per_track",
        "min_crop_height",
        "min_crop_sharpness",
        "tracker",
    )
    for name in names:
        value = getattr(settings, name)
        env[f"CAMTRACE_{name.upper()}"] = "" if value is None else str(value)
    env["CAMTRACE_DATA_DIR"] = str(data_dir)
    return env
