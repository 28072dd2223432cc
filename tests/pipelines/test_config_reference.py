"""docs/config.md is generated from the schema: stale means a field changed without the docs."""
from pathlib import Path

from pipelines.config_reference import render


def test_the_committed_config_reference_is_current():
    committed = Path("docs/config.md").read_text()
    assert committed == render(), "docs/config.md is stale: run .venv/bin/python -m pipelines.config_reference > docs/config.md"


def test_every_experiment_field_is_described():
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    undocumented = [line.split("|")[1].strip() for line in rows if line.rstrip().endswith("|  |")]
    assert not undocumented, undocumented
    assert any(line.startswith("| `prune.small_train.epochs` | int | `1000`") for line in rows)  # the section's own default
