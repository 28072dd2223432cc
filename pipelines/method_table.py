"""The README's method table, rendered from the method registrations (a test fails when it is stale):

    .venv/bin/python -m pipelines.method_table --write
"""
from __future__ import annotations

import sys

from .readme_block import README, ReadmeBlock

BLOCK = ReadmeBlock("methods", "python -m pipelines.method_table --write")


def _data(spec) -> str:
    if spec.small_set:
        return "distilled set or subset"
    if spec.needs_data:
        return "`examples_per_class` (10) per class" + ("" if spec.at_init else " (calibration)")
    if spec.at_init:
        return "none"
    return "" if spec.name == "dense" else "full"


COUNTS = {"round": "round(d·N), as exact", "floor": "int(d·N)", "ceil": "ceil(d·N)",
          "complement_floor": "N − int((1−d)·N)"}


def _count(spec) -> str:
    return COUNTS[spec.count_rule] if spec.at_init else "(its own selection)"


def _options(spec) -> str:
    from .list_cmd import option_rows

    return "<br>".join(f"`{name} = {default!r}`" for name, default, _ in option_rows(spec.options))


def render() -> str:
    from pruning.registry import METHODS

    rows = ["| method | what | `prune.options` (defaults) | data | kept under `count_rule: reference` | ablations |",
            "|---|---|---|---|---|---|"]
    for name in METHODS.names():
        spec = METHODS.get(name)
        if spec.origin != "built-in":
            continue
        cells = [f"`{name}`", spec.summary, _options(spec), _data(spec), _count(spec),
                 ", ".join(sorted(spec.ablations)) or "none"]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows)


def current(text: str) -> str:
    return BLOCK.current(text)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        BLOCK.write(render(), README)
    else:
        print(render())
