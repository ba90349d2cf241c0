"""The stages stay free of the shells: no module under detection/, embedding/, storage/, training/ or search/
imports Celery, kombu, FastAPI, Starlette, uvicorn, camtrace.workers or camtrace.api, directly or through other
camtrace modules, at import time or inside a function."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("detection", "embedding", "storage", "training", "search")
FORBIDDEN_PACKAGES = ("celery", "kombu", "fastapi", "starlette", "uvicorn")
FORBIDDEN_CAMTRACE = ("camtrace.workers", "camtrace.api")
# Alembic's environment runs only inside Alembic (it reads context.config at import); it is read, not imported.
NOT_IMPORTABLE_ALONE = {"camtrace.storage.migrations.env"}


def forbidden(module: str) -> bool:
    return module.split(".")[0] in FORBIDDEN_PACKAGES or any(
        module == name or module.startswith(name + ".") for name in FORBIDDEN_CAMTRACE
    )


def camtrace_modules() -> dict[str, Path]:
    """Every module of the distribution, by name, from pyproject's package-dir mapping."""
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    modules = {}
    for package, folder in mapping.items():
        for path in (ROOT / folder).glob("*.py"):
            modules[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return modules


def imported_names(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """Modules named by every import statement of a file, at any level of it (functions and
    TYPE_CHECKING blocks included); ``from package import name`` counts the submodule when there is one."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names if f"{base}.{alias.name}" in modules)
    return names


def with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a and a.b first."""
    parts = name.split(".")
    return [".".join(parts[: k + 1]) for k in range(len(parts))]


def stage_modules(modules: dict[str, Path]) -> list[str]:
    return sorted(name for name, path in modules.items() if path.relative_to(ROOT).parts[0] in STAGES)


def test_no_stage_module_reads_an_import_of_a_shell_or_of_celery_or_fastapi() -> None:
    modules = camtrace_modules()
    stages = stage_modules(modules)
    assert len(stages) > 30 and "camtrace.training.promotion" in stages and "camtrace.storage.migrations.env" in stages
    edges = {name: imported_names(path, name, modules) for name, path in modules.items()}
    offences = []
    for start in stages:
        # Walk every camtrace module the stage can reach, through imports at any depth; keep one path to each.
        path_to = {start: [start]}
        pending = [start]
        while pending:
            current = pending.pop()
            for name in sorted(edges[current]):
                if forbidden(name):
                    offences.append(" -> ".join([*path_to[current], name]))
                    continue
                for reached in with_parents(name):
                    if reached in modules and reached not in path_to:
                        path_to[reached] = [*path_to[current], reached]
                        pending.append(reached)
    assert offences == [], "\n".join(offences)


def test_the_reader_sees_the_imports_it_must_refuse(tmp_path: Path) -> None:
    # The walk above must notice each way a module can be named.
    source = tmp_path / "sample.py"
    source.write_text(
        "import kombu.utils\n"
        "from camtrace import workers\n"
        "def late():\n"
        "    from camtrace.api.deps import parse_moment\n"
        "    from ..workers import jobs\n"
    )
    modules = {"camtrace.workers": Path("w"), "camtrace.workers.jobs": Path("j"), "camtrace.training.sample": source}
    names = imported_names(source, "camtrace.training.sample", modules)
    assert {"kombu.utils", "camtrace.workers", "camtrace.api.deps", "camtrace.workers.jobs"} <= names
    assert all(forbidden(name) for name in ("kombu.utils", "camtrace.workers", "camtrace.api.deps", "starlette"))
    assert not any(forbidden(name) for name in ("camtrace.training", "camtrace.services", "celery_like"))


CHECK = "import importlib, json, sys; importlib.import_module(sys.argv[1]); print(json.dumps(sorted(sys.modules)))"


def loaded_after_import(module: str) -> tuple[str, list[str] | str]:
    """The forbidden modules in sys.modules after importing ``module`` alone in a fresh interpreter."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAMTRACE_")}
    done = subprocess.run([sys.executable, "-c", CHECK, module], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)
    if done.returncode != 0:
        return module, f"import failed: {done.stderr[-2000:]}"
    return module, [name for name in json.loads(done.stdout.strip().splitlines()[-1]) if forbidden(name)]


def test_importing_any_stage_module_alone_loads_no_shell_and_no_celery_or_fastapi() -> None:
    names = [name for name in stage_modules(camtrace_modules()) if name not in NOT_IMPORTABLE_ALONE]
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        results = dict(pool.map(loaded_after_import, names))
    assert {name: loaded for name, loaded in results.items() if loaded} == {}
    # The check itself sees what a shell loads.
    assert {"celery", "kombu", "camtrace.workers"} <= set(loaded_after_import("camtrace.workers.celery_app")[1])
