"""The quickstart's console output, its report in headless Chromium, and `prunetune report`."""
import os
import subprocess
import sys

import pytest

from pipelines.cli import main
from pipelines.report import pareto_front
from tests import browser
from tests.figure_checks import capture, check_figures

ARTIFACTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "test-artifacts")


def test_pareto_front_keeps_exactly_the_non_dominated_points():
    points = [(10, 0.9), (5, 0.8), (20, 0.85), (5, 0.7), (30, 0.95), (1, 0.5)]
    assert pareto_front(points) == [(1, 0.5), (5, 0.8), (10, 0.9), (30, 0.95)]


@pytest.mark.slow
def test_quickstart_fits_one_screen_and_its_report_renders_offline(tmp_path, capsys, monkeypatch):
    out = tmp_path / "quickstart"
    seen = capture(monkeypatch)
    code = main(["run", "configs/quickstart.yaml", "--out", str(out), "--set", "train.epochs=3",
                 "--set", "sweep.optuna.num_samples=3"])
    printed = capsys.readouterr()
    assert code == 0, printed.err[-3000:]
    lines = (printed.out + printed.err).splitlines()
    assert len(lines) <= 60, "\n".join(lines)
    text = "\n".join(lines)
    assert f"results: {out}/results.parquet" in text and f"report: {out}/report.html" in text
    assert f"MLflow UI: prunetune ui {out}" in text and "phase     method" in text
    assert "pid=" not in text and "\x1b[" not in text  # no Ray worker prefixes, no control codes
    assert (out / "logs" / "grid-0.log").read_text().strip()  # the trial's log is a file instead

    check_figures(seen)  # no overlapping tick labels, one colour per method in every figure
    md = (out / "report.md").read_text()
    assert "phase     method" in md and "](figures/accuracy_vs_density.png)" in md

    if not browser.available():
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: .ci/run installs it (apt-get install chromium)")
        pytest.skip("chromium not installed (CI installs it)")
    requests, images, shot = browser.visit(
        (out / "report.html").as_uri(),
        "Array.from(document.images).map(i => [i.complete, i.naturalWidth])")
    external = [u for u in requests if not u.startswith(("file:", "data:"))]
    assert not external, external
    assert len(images) >= 4 and all(done and width > 0 for done, width in images), images
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, "quickstart-report.png"), "wb") as f:
        f.write(shot)

    # --quiet: only the table and the paths (a resume of the finished sweep redoes nothing)
    assert main(["resume", str(out), "--quiet"]) == 0
    quiet = capsys.readouterr().out
    assert "grid phase" not in quiet and "[grid" not in quiet and "report:" in quiet
    # ... and it answers from the sweep's own files: no Ray, no MLflow, not even torch is imported.
    code = ("import sys; from pipelines.cli import main; rc = main(['resume', sys.argv[1]]); "
            "print(sorted(m for m in ('ray.tune', 'mlflow', 'torch', 'matplotlib') if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("[]"), proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "nothing is left to run" in proc.stdout and "report:" in proc.stdout
    assert main(["report", str(out)]) == 0 and "accuracy_vs_density.png" in capsys.readouterr().out
