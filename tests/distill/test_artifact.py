import pickle

import pytest
import torch

from distill.artifact import DistilledSet, DistilledSetError, load_checkpoint, save_checkpoint, save_picture
from distill.methods import DistillConfig, distill_dataset
from training.data import Normalization


def _random_set(data, ipc=3):
    return distill_dataset(data, DistillConfig(method="random", ipc=ipc, seed=1))


def test_round_trip_is_equal(digits, tmp_path):
    ds = _random_set(digits)
    path = tmp_path / "sets" / "digits.pt"
    ds.save(path)
    back = DistilledSet.load(path)
    assert torch.equal(back.x, ds.x) and torch.equal(back.y, ds.y) and back.y.dtype == torch.int64
    assert back.normalization == ds.normalization == digits.normalization
    assert back.input_shape == ds.input_shape == (1, 8, 8)
    assert back.num_classes == 10
    assert back.recipe == ds.recipe and back.source == ds.source and back.cost == ds.cost
    assert back.content_hash == ds.content_hash == ds.expected_hash()
    assert not list(path.parent.glob(".*"))  # atomic write left no temporary file


def test_load_uses_weights_only(digits, tmp_path, monkeypatch):
    ds = _random_set(digits)
    ds.save(tmp_path / "a.pt")
    seen = {}
    real_load = torch.load

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    DistilledSet.load(tmp_path / "a.pt")
    assert seen.get("weights_only") is True


class Evil:
    """Any class outside torch's weights-only allow-list."""


def test_arbitrary_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "prunetune.distilled_set.v1", "x": Evil()}, path, pickle_module=pickle)
    with pytest.raises(DistilledSetError, match=str(path)):
        DistilledSet.load(path)


def test_missing_and_corrupt_files_name_the_path(digits, tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        DistilledSet.load(missing)
    ds = _random_set(digits)
    path = tmp_path / "c.pt"
    ds.save(path)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    with pytest.raises(DistilledSetError, match=str(path)):
        DistilledSet.load(path)
    other = tmp_path / "other.pt"
    torch.save({"hello": torch.zeros(1)}, other)
    with pytest.raises(DistilledSetError, match="not a distilled set"):
        DistilledSet.load(other)


def test_as_bundle_train_is_distilled_val_test_real(digits):
    ds = _random_set(digits)
    b = ds.as_bundle(digits)
    assert torch.equal(b.train.x, ds.x) and torch.equal(b.train.y, ds.y)
    assert b.val is digits.val and b.test is digits.test
    assert b.normalization == digits.normalization and b.input_shape == digits.input_shape
    other = DistilledSet(ds.x, ds.y, Normalization((0.5,), (0.2,)), ds.input_shape, 10, ds.recipe, ds.source)
    with pytest.raises(ValueError, match="normalisation"):
        other.as_bundle(digits)


def test_validation_and_hash_depends_on_recipe(digits):
    ds = _random_set(digits)
    with pytest.raises(ValueError, match="labels"):
        DistilledSet(ds.x[:2], ds.y[:3], ds.normalization, ds.input_shape, 10, {}, {})
    a = DistilledSet(ds.x, ds.y, ds.normalization, ds.input_shape, 10, {"method": "x", "seed": 0}, {"d": 1})
    b = DistilledSet(ds.x, ds.y, ds.normalization, ds.input_shape, 10, {"method": "x", "seed": 1}, {"d": 1})
    assert a.content_hash != b.content_hash
    assert _random_set(digits).content_hash == ds.content_hash  # deterministic


@pytest.mark.parametrize("which", ["digits", "mnist1d"])
def test_picture_written(which, request, tmp_path):
    data = request.getfixturevalue(which)
    ds = _random_set(data, ipc=2)
    path = tmp_path / f"{which}.png"
    save_picture(ds, path)
    assert path.is_file() and path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_helpers(tmp_path):
    path = tmp_path / "ck.pt"
    assert load_checkpoint(path, "h1") is None
    save_checkpoint(path, "h1", {"iteration": 3, "x": torch.ones(2)})
    state = load_checkpoint(path, "h1")
    assert state["iteration"] == 3 and torch.equal(state["x"], torch.ones(2))
    assert load_checkpoint(path, "other") is None
    path.write_bytes(b"garbage")
    with pytest.raises(DistilledSetError, match=str(path)):
        load_checkpoint(path, "h1")
