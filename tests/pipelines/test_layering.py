"""The import layering holds: every package imports only those below it, and no module circle exists
except the declared registrations (``pipelines.layering``)."""
from pathlib import Path

from pipelines import layering


def test_the_project_has_no_upward_import_and_no_circle():
    assert layering.problems() == []


def _package(root: Path, files: dict[str, str]) -> Path:
    for layer in layering.LAYERS:
        (root / layer).mkdir(parents=True, exist_ok=True)
        (root / layer / "__init__.py").write_text("")
    for name, text in files.items():
        (root / name).write_text(text)
    return root


def test_it_finds_an_upward_import_and_a_circle_even_inside_a_function(tmp_path):
    root = _package(tmp_path, {
        "training/low.py": "def f():\n    from pipelines import high\n",  # lazy, still upward
        "pipelines/high.py": "",
        "pruning/a.py": "from . import b\n",
        "pruning/b.py": "def g():\n    from .a import x\n",
    })
    graph = layering.import_graph(root)
    assert layering.layer_violations(graph) == ["training.low imports pipelines.high: pipelines is not below training"]
    assert layering.circles(graph) == [["pruning.a", "pruning.b"]]


def test_no_function_in_pipelines_is_over_60_lines():
    """The orchestration stays readable in steps with names of their own (issue 23)."""
    import ast

    long = []
    for path in sorted((layering.ROOT / "pipelines").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long.append(f"{path.name}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
