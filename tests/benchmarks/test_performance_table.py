"""The README's Performance section is what the committed benchmark JSON renders to."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _renderer():
    spec = importlib.util.spec_from_file_location("render_performance", ROOT / "benchmarks" / "render_performance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_performance_section_matches_the_committed_json():
    r = _renderer()
    readme = (ROOT / "README.md").read_text()
    assert r.START in readme and r.END in readme
    current = r.START + readme.split(r.START, 1)[1].split(r.END, 1)[0] + r.END
    assert current == r.render(), "README's Performance section is stale: run benchmarks/render_performance.py --write"


def test_every_rendered_figure_comes_from_a_result_file():
    r = _renderer()
    section = r.render()
    for name in ("trainer_overhead", "sweep_overhead", "stage_reuse", "scorer_cost", "scale_simulation",
                 "time_to_ticket"):
        assert (r.RESULTS / f"{name}.json").is_file(), name
        assert name in section
