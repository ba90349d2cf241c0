"""Models converted for another runtime, built once per model version and reused.

An export lives in ``<exports dir>/<model version>/<name>/`` as one model file
and a ``manifest.json`` naming the source model version, the runtime, the
quantisation, the options it was built with and the file's sha256. It is
built under a file lock, so workers starting together build it once; written
under a temporary name and renamed, manifest last, so a crash leaves no
half-written file that looks finished; and checked in full before every use:
a truncated file, a foreign manifest or one from other options is rebuilt,
never loaded.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from camtrace.errors import ModelLoadError

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
# A build of the siglip2-base vision tower takes about a minute on 2 cores; a waiting worker gives up much later.
LOCK_TIMEOUT_S = 1800.0


@dataclass(frozen=True)
class ExportSpec:
    """What an export must have been built from and with; any difference means a rebuild."""

    name: str  # e.g. "vision-int8", "detector-320"
    source_version: str
    runtime: str
    quantization: str
    file_name: str
    options: dict[str, Any] = field(default_factory=dict)

    def manifest(self, sha256: str, size: int) -> dict[str, Any]:
        return {"format": MANIFEST_FORMAT, **asdict(self), "sha256": sha256, "size": size}


def folder_name(version: str) -> str:
    """A model version as one safe folder name (hub ids hold slashes)."""
    return re.sub(r"[^A-Za-z0-9._@-]+", "_", version).strip("._") or "model"


def sha256_of(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def export_folder(root: Path, spec: ExportSpec) -> Path:
    return Path(root) / folder_name(spec.source_version) / spec.name


def check_export(folder: Path, spec: ExportSpec) -> str | None:
    """Why the export in ``folder`` cannot be used (None: it can)."""
    manifest_path = folder / MANIFEST
    model_path = folder / spec.file_name
    if not manifest_path.is_file():
        return "no manifest"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        return f"unreadable manifest ({exc})"
    if not isinstance(manifest, dict):
        return "unreadable manifest"
    recorded = {k: v for k, v in manifest.items() if k not in ("sha256", "size")}
    expected = {k: v for k, v in spec.manifest("", 0).items() if k not in ("sha256", "size")}
    if recorded != expected:
        changed = sorted(k for k in expected.keys() | recorded.keys() if recorded.get(k) != expected.get(k))
        return f"stale: built with other {', '.join(changed)}"
    if not model_path.is_file():
        return f"{spec.file_name} is missing"
    size = model_path.stat().st_size
    if size != manifest.get("size"):
        return f"{spec.file_name} has {size} bytes, the manifest says {manifest.get('size')}"
    if sha256_of(model_path) != manifest.get("sha256"):
        return f"{spec.file_name} does not match its checksum"
    return None


def ensure_export(root: Path, spec: ExportSpec, build: Callable[[Path], Path], describe: str) -> Path:
    """The path of a valid export of ``spec``, building it with ``build(work_dir) -> file`` if needed.

    ``describe`` names the export in the progress message (``"ONNX int8 export of the vision tower"``).
    """
    folder = export_folder(root, spec)
    target = folder / spec.file_name
    if check_export(folder, spec) is None:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    with FileLock(str(folder) + ".lock", timeout=LOCK_TIMEOUT_S):
        problem = check_export(folder, spec)
        if problem is None:  # another process built it while this one waited
            return target
        if (folder / MANIFEST).exists() or target.exists():
            log.warning("rebuilding %s for %s: %s", describe, spec.source_version, problem)
        log.info("building %s for %s (once per model version) ...", describe, spec.source_version)
        began = time.perf_counter()
        # The manifest goes first and last: without it nothing here counts as finished.
        (folder / MANIFEST).unlink(missing_ok=True)
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=folder))
        try:
            try:
                built = Path(build(work))
            except ModelLoadError:
                raise
            except Exception as exc:
                raise ModelLoadError(
                    f"cannot build {describe} of {spec.source_version} ({type(exc).__name__}: {exc}); "
                    "set CAMTRACE_RUNTIME=torch to run without it"
                ) from exc
            manifest = spec.manifest(sha256_of(built), built.stat().st_size)
            os.replace(built, target)
            tmp_manifest = work / MANIFEST
            tmp_manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True))
            os.replace(tmp_manifest, folder / MANIFEST)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        log.info("built %s in %.1f s: %s", describe, time.perf_counter() - began, target)
    return target
