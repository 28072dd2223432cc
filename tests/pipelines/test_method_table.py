"""The README's method table is rendered from the registrations (no list of methods kept by hand)."""
from pipelines import method_table
from pruning.registry import METHODS


def test_the_readme_method_table_is_current():
    text = method_table.README.read_text()
    assert method_table.current(text) == method_table.render(), \
        "README method table is stale: run python -m pipelines.method_table --write"


def test_every_builtin_method_has_a_row_with_its_options():
    table = method_table.render()
    for name in METHODS.names():
        if METHODS.origin(name) == "built-in":
            assert f"| `{name}` |" in table
    assert "`temperature = 200.0`" in table and "`steps = 3`" in table
