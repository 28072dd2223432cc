import pytest
import yaml

from pipelines.cluster import validate_cluster_file


def test_ray_cluster_yaml_validates_offline():
    cfg = validate_cluster_file("ray_cluster.yaml")
    assert cfg["head_node_type"] in cfg["available_node_types"]
    head = " ".join(cfg["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head


def test_the_cluster_shares_no_filesystem_but_the_bucket_and_the_tracking_server():
    """What tests/pipelines/test_no_shared_fs.py proves on one machine is what the cluster starts: an MLflow
    server on the head proxying artifacts to the bucket, and the store and tracking URIs exported for
    drivers (logins) and jobs (the environment of `ray start`)."""
    cfg = validate_cluster_file("ray_cluster.yaml")
    setup, start = " ".join(cfg["head_setup_commands"]), cfg["head_start_ray_commands"]
    assert "PRUNETUNE_STORE_URI=s3://" in setup and "PRUNETUNE_TRACKING_URI=http://" in setup
    ray_start = next(c for c in start if "ray start --head" in c)
    assert ray_start.startswith(". /etc/prunetune.env;")  # jobs' drivers inherit the variables
    server = next(c for c in start if "mlflow server" in c)
    assert "--artifacts-destination s3://" in server and "--no-serve-artifacts" not in server
    assert "0.0.0.0" not in server
    assert not any("nfs" in c.lower() for c in cfg["setup_commands"] + start)


def test_cluster_validation_catches_typos(tmp_path):
    raw = yaml.safe_load(open("ray_cluster.yaml"))
    raw["max_wokers"] = 3
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(Exception, match="max_wokers"):
        validate_cluster_file(bad)
