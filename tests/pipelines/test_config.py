"""Bad input is rejected before Ray starts: exit 2, the field named, nothing written."""
import textwrap

from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.config import ConfigError, apply_override, load_experiment, parse_override

BASE = textwrap.dedent(
    """
    name: t
    data: {name: digits}
    model: {name: mlp, options: {widths: [16]}}
    train: {epochs: 1}
    prune: {method: magnitude, sparsity: 0.5}
    """
)


def _write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def _run_cli(tmp_path, text, *extra):
    out = tmp_path / "out"
    code = main(["run", str(_write(tmp_path, text)), "--out", str(out), *extra])
    return code, out


@pytest.mark.parametrize(
    "text, fragment",
    [
        (BASE.replace("sparsity: 0.5", "sparsty: 0.5"), "prune.sparsty"),
        (BASE.replace("sparsity: 0.5", "sparsity: 1.5"), "prune.sparsity"),
        (BASE.replace("method: magnitude", "method: magnitude_pruning"), "prune.method"),
        (BASE.replace("name: mlp", "name: mlpp"), "model"),
        (BASE.replace("name: digits", "name: digitz"), "data.name"),
        (BASE.replace("epochs: 1", "epochs: one"), "train.epochs"),
        (BASE + "sweep: {grid: {prune.sparsity: [0.5, 1.2]}}\n", "sweep.grid point 1"),
        (BASE + "sweep: {optuna: {space: {prune.sparsity: {type: float, low: 0.5, high: 1.0}}}}\n", "sweep.optuna.space.prune.sparsity"),
        (BASE + "sweep: {optuna: {space: {train.lr: {type: float, low: 0.5, high: 0.1}}}}\n", "sweep.optuna.space.train.lr"),
    ],
)
def test_bad_config_exits_2_names_the_field_and_writes_nothing(tmp_path, capsys, text, fragment):
    code, out = _run_cli(tmp_path, text)
    err = capsys.readouterr().err
    assert code == 2
    assert fragment in err, err
    assert not out.exists()


def test_bad_value_message_says_what_is_allowed(tmp_path, capsys):
    code, _ = _run_cli(tmp_path, BASE.replace("sparsity: 0.5", "sparsity: 1.5"))
    err = capsys.readouterr().err
    assert "1.5" in err and "less than 1" in err
    code, _ = _run_cli(tmp_path, BASE.replace("method: magnitude", "method: magnitude_pruning"))
    err = capsys.readouterr().err
    assert "allowed" in err and "imp" in err


def test_set_override_is_validated_too(tmp_path, capsys):
    code, out = _run_cli(tmp_path, BASE, "--set", "prune.sparsity=1.5")
    assert code == 2 and "prune.sparsity" in capsys.readouterr().err and not out.exists()
    code, out = _run_cli(tmp_path, BASE, "--set", "prune.sparsity")
    assert code == 2 and "KEY=VALUE" in capsys.readouterr().err


def test_missing_dataset_directory_exits_2_naming_the_path(tmp_path, capsys):
    text = BASE.replace("data: {name: digits}", f"data: {{name: cifar10, root: {tmp_path / 'nodata'}}}")
    code, out = _run_cli(tmp_path, text)
    err = capsys.readouterr().err
    assert code == 2 and str(tmp_path / "nodata") in err and not out.exists()


def test_missing_config_file(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_overrides_are_parsed_as_yaml_not_evaluated():
    assert parse_override("train.lr=0.001") == ("train.lr", 0.001)
    assert parse_override("train.amp=true") == ("train.amp", True)
    assert parse_override("sweep.grid=[1, 2]") == ("sweep.grid", [1, 2])
    assert parse_override("name=__import__('os')") == ("name", "__import__('os')")
    assert apply_override({"a": {"b": 1}}, "a.c.d", 2) == {"a": {"b": 1, "c": {"d": 2}}}
    with pytest.raises(ConfigError, match="not a section"):
        apply_override({"a": 1}, "a.b", 2)


def test_quickstart_config_is_valid_and_every_grid_point_validates():
    cfg, raw = load_experiment("configs/quickstart.yaml")
    methods = {m for block in cfg.sweep.grid for m in block.get("prune.method", [])}
    assert {"dense", "random", "magnitude", "imp"} <= methods
    assert cfg.sweep.optuna is not None


def test_trial_key_depends_only_on_result_settings():
    cfg, _ = load_experiment("configs/quickstart.yaml")
    from pipelines.trial import trial_graph

    other = cfg.model_copy(update={"resources": cfg.resources.model_copy(update={"cpu": 2.0})})
    assert trial_graph(other).key == trial_graph(cfg).key
    changed = cfg.model_copy(update={"seed": 1})
    assert trial_graph(changed).key != trial_graph(cfg).key


def test_results_table_reaches_shared_storage_through_pyarrow_fs(tmp_path):
    import pyarrow.parquet as pq

    from pipelines.results import copy_to_uri, write_results

    local = write_results([{"trial_id": "a", "method": "imp", "status": "ok", "test_accuracy": 0.5}], tmp_path / "r.parquet")
    dest = tmp_path / "shared" / "nested" / "results.parquet"
    copy_to_uri(local, dest.as_uri())
    assert pq.read_table(dest).to_pylist()[0]["method"] == "imp"
    copy_to_uri(local, str(tmp_path / "plain" / "results.parquet"))
    assert pq.read_table(tmp_path / "plain" / "results.parquet").to_pylist()[0]["test_accuracy"] == 0.5


QUICKSTART = (Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml").read_text()
BOMB = "a: &a [1,1,1,1,1,1,1,1,1]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdef", "bcdefg"))


@pytest.mark.parametrize("content,expected", [
    (QUICKSTART.replace("seed: 0\n", "seed: 0\nseed: 1\n", 1), "duplicate key 'seed' at line 4 (first at line 3)"),
    (b"\x00\x01binary", "is binary"),
    ("name: caf\xe9\n".encode("latin-1"), "is not UTF-8 text (byte 9"),
    ("a: " + "[" * 200 + "]" * 200, "nested too deeply"),
    (QUICKSTART.replace("lr: 0.05", "lr: .inf"), "train.lr: must be a finite number"),
    (QUICKSTART.replace("low: 0.01", "low: .nan"), "sweep.optuna.space.train.lr.low: must be a finite number"),
    (QUICKSTART.replace("name: quickstart", "name: ../../x"), "name: String should match pattern"),
    (QUICKSTART.replace("seed: 0\n", "seed: -1\n", 1), "seed: Input should be greater than or equal to 0"),
    (QUICKSTART + "tracking: {tracking_uri: 'file:///tmp/x'}\n", "refuses its file store; use sqlite:///"),
    (QUICKSTART + "tracking: {results_uri: 'ftp://h/x.parquet'}\n", "unknown scheme 'ftp'"),
    (QUICKSTART + "store: {uri: 's3://bucket/store'}\n", "store.uri s3://bucket/store: cannot reach the object store"),
    (QUICKSTART + "store: {uri: 'nosuch://bucket/store'}\n", "unknown scheme 'nosuch'"),
    (BOMB, "data: Field required"),  # aliases are walked once each: an answer, not a hang
])
def test_bad_files_and_values_exit_2_naming_the_problem(tmp_path, capsys, content, expected):
    from pipelines.cli import main

    path = tmp_path / "c.yaml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "out"
    assert main(["run", str(path), "--out", str(out)]) == 2
    assert expected in capsys.readouterr().err
    assert not out.exists()


def test_a_directory_is_not_a_config(tmp_path, capsys):
    from pipelines.cli import main

    assert main(["run", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err


PAPERS = sorted(__import__("pathlib").Path("configs/papers").glob("*.yaml"))


@pytest.mark.parametrize("path", PAPERS, ids=lambda p: p.stem)
def test_every_paper_config_and_its_smoke_variant_validate(path):
    cfg, raw = load_experiment(path)
    assert "cpu-smoke" in cfg.variants and "variants" not in raw
    smoke, raw = load_experiment(path, variant="cpu-smoke")
    assert smoke.data.name == "fake" and smoke.train.epochs <= 2  # what CI runs (make smoke) is small
    assert smoke.prune.method == cfg.prune.method  # the same pipeline


def test_an_unknown_variant_is_refused_with_the_ones_there_are(tmp_path, capsys):
    code = main(["run", str(PAPERS[0]), "--variant", "gpu-huge", "--out", str(tmp_path / "out")])
    assert code == 2 and "allowed: cpu-smoke" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_typo_in_a_variant_is_found_without_choosing_it(tmp_path, capsys):
    code, out = _run_cli(tmp_path, BASE + "variants: {small: {train.epochz: 1}}\n")
    assert code == 2 and "variants.small" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("extra, fragment", [
    ("constraints: ['flops < 2e6']", "expected 'METRIC <= NUMBER'"),
    ("constraints: ['latency <= 3']", "constraints"),
    ("constraints: ['flops <= 1e999']", "finite"),
    ("sampler: grid", "sampler 'grid' enumerates choices"),
    ("sampler: cmaes", "sweep.optuna.sampler"),
])
def test_bad_search_settings_are_refused(tmp_path, capsys, extra, fragment):
    text = BASE + "sweep: {optuna: {" + extra + ", space: {prune.sparsity: {type: float, low: 0.3, high: 0.6}}}}\n"
    code, out = _run_cli(tmp_path, text)
    assert code == 2 and fragment in capsys.readouterr().err and not out.exists()


def test_every_named_sampler_builds():
    from search.space import SAMPLER_NAMES, Categorical
    from search.study import make_sampler

    for name in SAMPLER_NAMES:
        assert make_sampler(name, 0, {"x": Categorical(type="categorical", choices=[1, 2])}) is not None
