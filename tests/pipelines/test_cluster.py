import pytest
import yaml

from pipelines.cluster import validate_cluster_file


def test_ray_cluster_yaml_validates_offline():
    cfg = validate_cluster_file("ray_cluster.yaml")
    assert cfg["head_node_type"] in cfg["available_node_types"]
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head


def test_cluster_validation_catches_typos(tmp_path):
    raw = yaml.safe_load(open("ray_cluster.yaml"))
    raw["max_wokers"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match="max_wokers"):
        validate_cluster_file(bad)
