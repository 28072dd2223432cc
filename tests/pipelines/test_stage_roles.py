"""Stages declare their roles; no other module picks a stage out by its name.

A stage named by a string elsewhere (``stage.name == "retrain"``, a tuple of names, ``store.get("evaluate",
...)``) is a second list to keep in step with the stages: a renamed or new stage then silently loses its
role. The scan reads every package's source, so it fails on the first such string that comes back.
"""
from __future__ import annotations

import ast
from pathlib import Path

from pipelines.trial import stage_names
from training.stage import shared_stage_names

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("training", "pruning", "distill", "search", "pipelines")
STORE_CALLS = {"get", "is_done", "entry_uri", "get_or_compute"}  # the store's methods that take a stage name


def _defining_files() -> dict[str, Path]:
    import inspect

    return {name: Path(inspect.getfile(cls)).resolve() for name, cls in stage_names().items()}


def _consts(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return [v for elt in node.elts for v in _consts(elt)]
    return []


def _is_name_attr(node: ast.AST) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "name" or isinstance(node, ast.Name) and node.id == "stage_name"


def stage_name_uses(tree: ast.AST, names: set[str]) -> list[tuple[int, str]]:
    """(line, name) of every place the tree picks a stage by its name string."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(_is_name_attr(n) for n in (node.left, *node.comparators)):
            found += [(node.lineno, v) for n in (node.left, *node.comparators) for v in _consts(n) if v in names]
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in STORE_CALLS
              and node.args):
            found += [(node.lineno, v) for v in _consts(node.args[0]) if v in names]
        elif isinstance(node, ast.Assign) and isinstance(node.value, (ast.Tuple, ast.List, ast.Set)):
            listed = [v for v in _consts(node.value) if v in names]
            if len(listed) >= 2:  # a hand-kept list of stages
                found += [(node.lineno, v) for v in listed]
    return found


def test_no_stage_is_named_outside_the_module_that_defines_it():
    defining = _defining_files()
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            names = {n for n, f in defining.items() if f != path.resolve()}
            uses = stage_name_uses(ast.parse(path.read_text(), str(path)), names)
            offenders += [f"{path.relative_to(ROOT)}:{line}: {name!r}" for line, name in uses]
    assert not offenders, "stages picked out by name (declare a role on the stage instead):\n" + "\n".join(offenders)


def test_the_scan_finds_each_kind_of_use():
    """The scan itself must see what it forbids, or the test above passes on anything."""
    source = '''
SHARED = ("distill", "pretrain")
if stage.name in ("retrain", "pdp"): pass
if s.name == "imp_level": pass
store.get("evaluate", key)
'''
    found = {name for _, name in stage_name_uses(ast.parse(source), set(stage_names()))}
    assert found == {"distill", "pretrain", "retrain", "pdp", "imp_level", "evaluate"}


def test_roles_are_declared_on_the_stages():
    classes = stage_names()
    assert shared_stage_names() == ("experts", "distill", "pretrain")  # a set before what trains on it
    assert {n for n, c in classes.items() if c.final_training} == {"retrain", "pdp"}
    assert {n for n, c in classes.items() if c.reports_progress} == {"imp_level"}
