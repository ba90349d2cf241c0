"""The code stays readable for the next engineer: no class over 300 lines, no function over 60 lines outside the
short list the README's layout section justifies, and no module reaching into another's private names. (The
complexity limit, 12, is ruff's C901, checked with the rest of ``ruff check``.)"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("camtrace", "api", "detection", "embedding", "search", "storage", "training", "workers")
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60
# Longer than the limit, with the reason (README, "Layout"): each reads top to bottom as one thing.
LONG_FUNCTIONS = {
    "camtrace/synthetic.py:_draw_figure": "draws one figure: body, head, clothes and items in painting order",
    "camtrace/synthetic_site.py:_walks": "one loop over the site's people, each walk's rules in the order they apply",
    "camtrace/synthetic.py:write_footage": "writes one camera's video frame by frame with its ground truth",
    "api/app.py:create_app": "the app's wiring in one place: middleware, routers, error handlers, the page",
}


def python_files() -> list[Path]:
    files = []
    for folder in FOLDERS:
        files.extend(p for p in (ROOT / folder).rglob("*.py") if "migrations" not in p.parts)
    return sorted(files)


def definitions(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node, node.end_lineno - node.lineno + 1


def test_no_class_or_function_is_too_long():
    too_long = []
    for path in python_files():
        relative = path.relative_to(ROOT).as_posix()
        for node, lines in definitions(path):
            if isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
                too_long.append(f"{relative}:{node.lineno} class {node.name}: {lines} lines")
            elif not isinstance(node, ast.ClassDef) and lines > MAX_FUNCTION_LINES:
                if f"{relative}:{node.name}" not in LONG_FUNCTIONS:
                    too_long.append(f"{relative}:{node.lineno} {node.name}: {lines} lines")
    assert not too_long, "split these (or justify them in LONG_FUNCTIONS and the README):\n" + "\n".join(too_long)


def test_the_justified_long_functions_still_exist_and_are_long():
    found = {}
    for path in python_files():
        relative = path.relative_to(ROOT).as_posix()
        for node, lines in definitions(path):
            if not isinstance(node, ast.ClassDef):
                found[f"{relative}:{node.name}"] = max(lines, found.get(f"{relative}:{node.name}", 0))
    stale = [name for name in LONG_FUNCTIONS if found.get(name, 0) <= MAX_FUNCTION_LINES]
    assert not stale, f"no longer long (or gone): drop from LONG_FUNCTIONS and the README: {stale}"


def test_no_module_imports_another_modules_private_names():
    offenders = []
    for path in python_files():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("camtrace"):
                private = [alias.name for alias in node.names if alias.name.startswith("_") and alias.name != "__version__"]
                if private:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} from {node.module} import {private}")
            # Another object's private attribute through the database (db._guard and the like).
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Attribute)
                and node.value.attr == "db"
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} .db.{node.attr}")
    assert not offenders, "\n".join(offenders)
