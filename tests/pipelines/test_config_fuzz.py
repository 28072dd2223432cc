"""Fuzz: malformed variants of the quickstart, each refused with exit 2, the field or path named, no
traceback, nothing written and no Ray started. Mutations are generated from the config's own
structure, so a field added to the quickstart is fuzzed too."""
import copy
from pathlib import Path

import pytest
import ray
import yaml

from pipelines.cli import main

QUICKSTART = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "quickstart.yaml").read_text())


def _leaves(node, path=()):
    """Every scalar or list value with its key path (lists are values here: grid axes, widths)."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _leaves(v, path + (k,))
    else:
        yield path, node


def _sections(node, path=()):
    if isinstance(node, dict):
        yield path
        for k, v in node.items():
            yield from _sections(v, path + (k,))


def _set(path, value):
    cfg = copy.deepcopy(QUICKSTART)
    node = cfg
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return cfg


def _mutations():
    out = []
    for path, value in _leaves(QUICKSTART):
        named = str(path[-1])
        # A mapping where a value belongs is wrong for every field of the schema.
        out.append((f"type:{'.'.join(map(str, path))}", _set(path, {"oops": [1]}), named))
        if isinstance(value, float):
            for bad in (float("inf"), float("nan")):
                out.append((f"nonfinite:{'.'.join(map(str, path))}={bad}", _set(path, bad), named))
    for path in _sections(QUICKSTART):
        cfg = copy.deepcopy(QUICKSTART)
        node = cfg
        for k in path:
            node = node[k]
        node["bogus_key"] = 1
        out.append((f"unknown:{'.'.join(map(str, path)) or 'top'}", cfg, "bogus_key"))
    space = ("sweep", "optuna", "space")
    out += [
        ("range:low>high", _set(space + ("train.lr",), {"type": "float", "low": 0.2, "high": 0.01}), "train.lr"),
        ("range:log-low-0", _set(space + ("train.lr",), {"type": "float", "low": 0.0, "high": 0.2, "log": True}), "train.lr"),
        ("range:unknown-type", _set(space + ("train.lr",), {"type": "gaussian", "low": 0.0, "high": 1.0}), "train.lr"),
        ("range:empty-choices", _set(space + ("train.lr",), {"type": "categorical", "choices": []}), "train.lr"),
        ("range:out-of-schema", _set(space + ("prune.sparsity",), {"type": "float", "low": 0.5, "high": 1.5}), "prune.sparsity"),
        ("range:int-log-0", _set(space + ("train.epochs",), {"type": "int", "low": 0, "high": 9, "log": True}), "train.epochs"),
        ("value:sparsity>1", _set(("prune", "sparsity"), 1.5), "prune.sparsity"),
        ("value:negative-epochs", _set(("train", "epochs"), -3), "train.epochs"),
        ("value:grid-method", _set(("sweep", "grid"), [{"prune.method": ["magnitude", "nope"]}]), "prune.method"),
        ("value:bad-name", _set(("name",), "../escape"), "name"),
    ]
    return out


MUTATIONS = _mutations()
ENCODINGS = [
    ("encoding:latin-1", "name: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    ("encoding:binary", b"\x00\x01\x02", "binary"),
    ("encoding:utf-16", yaml.safe_dump(QUICKSTART).encode("utf-16"), "c.yaml"),
    ("encoding:not-yaml", b"name: [unclosed\n", "not valid YAML"),
    ("encoding:a-list", b"- 1\n- 2\n", "must hold a mapping"),
]


def test_there_are_at_least_fifty_mutations():
    assert len(MUTATIONS) + len(ENCODINGS) >= 50, len(MUTATIONS)


def _refused(tmp_path, capsys, content: bytes, named: str):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    out = tmp_path / "out"
    code = main(["run", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert named in err, err
    assert "Traceback" not in err and err.startswith("prunetune: error:"), err
    assert not out.exists()
    assert not ray.is_initialized()


@pytest.mark.parametrize("label,cfg,named", MUTATIONS, ids=[m[0] for m in MUTATIONS])
def test_a_mutated_quickstart_is_refused(tmp_path, capsys, label, cfg, named):
    _refused(tmp_path, capsys, yaml.safe_dump(cfg, sort_keys=False).encode(), named)


@pytest.mark.parametrize("label,content,named", ENCODINGS, ids=[e[0] for e in ENCODINGS])
def test_a_badly_encoded_file_is_refused(tmp_path, capsys, label, content, named):
    _refused(tmp_path, capsys, content, named)
