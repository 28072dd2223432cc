"""One results schema: the README's column table, the search objectives, the error row and the MLflow
metrics are all read off ``pipelines.results.COLUMNS``."""
import typing

from pipelines import columns_table, results
from pipelines.trainable import error_row
from search.space import Metric


def test_the_readme_column_table_is_current():
    assert columns_table.BLOCK.current(columns_table.README.read_text()) == columns_table.render(), \
        "README result-column table is stale: run python -m pipelines.columns_table --write"


def test_every_column_is_declared_once_and_written_in_that_order():
    assert len(results.NAMES) == len(set(results.NAMES))
    table = results.to_table([{"method": "random", "seed": 0, "status": "ok"}])
    assert table.column_names == results.NAMES


def test_objectives_and_error_rows_come_from_the_schema():
    objectives = set(typing.get_args(Metric))
    assert objectives == set(results.OBJECTIVE_COLUMNS)
    assert {"val_accuracy", "flops", "latency_ms"} <= objectives and "wall_time_s" not in objectives
    row = error_row("boom")
    assert set(row) == {"status", "error", *objectives}  # a failed trial reports NaN for every objective


def test_ids_seeds_and_times_are_not_metrics():
    assert {"seed", "started_at", "ended_at", "trial_id", "status"} <= results.NOT_METRICS
    assert "test_accuracy" not in results.NOT_METRICS


def test_a_column_no_trial_filled_still_has_its_declared_type():
    table = results.to_table([{"method": "random", "seed": 0, "status": "error", "error": "boom"}])
    assert str(table.schema.field("export_params").type) == "int64"
    assert str(table.schema.field("collapsed").type) == "bool"
    assert str(table.schema.field("test_loss").type) == "double"
