"""The method registration API: what a registration declares is what validation, keys and the CLI use;
built-in method modules import no torch; old flat fields name their new path."""
from __future__ import annotations

import subprocess
import sys

import pytest
from pydantic import Field

from pipelines.config import ConfigError, validate
from pruning.registry import METHODS, MethodOptions, Scorer, moved_fields, register_method

BASE = {"data": {"name": "digits"}, "model": {"name": "mlp", "options": {"widths": [16]}}}


class _Opts(MethodOptions):
    alpha: float = Field(0.5, gt=0, lt=1, description="a mixing weight")


@register_method("test_registry_mix", options=_Opts, ablations={"shuffle"})
class _MixScorer(Scorer):
    """alpha * |w|: a method registered from a test module."""

    def score(self, model, params, mask, batches):
        return {n: self.alpha * p.detach().abs().double() for n, p in params.items()}


def test_a_registration_from_outside_is_a_method_like_the_builtins():
    spec = METHODS.get("test_registry_mix")
    assert spec.origin == f"plugin {__name__}" and spec.at_init and spec.ablations == {"shuffle"}
    assert spec.structured == {"channel", "head"}  # a ranking scorer can select whole channels and heads
    cfg = validate({**BASE, "prune": {"method": "test_registry_mix", "sparsity": 0.5, "options": {"alpha": 0.25}}})
    assert cfg.prune.options == {"alpha": 0.25}
    assert _MixScorer(alpha=0.25).alpha == 0.25  # options are attributes, defaults defined once (in _Opts)
    assert _MixScorer().alpha == 0.5
    with pytest.raises(ConfigError, match=r"prune\.options\.alpha: Input should be less than 1"):
        validate({**BASE, "prune": {"method": "test_registry_mix", "sparsity": 0.5, "options": {"alpha": 2}}})
    with pytest.raises(ConfigError, match="ablation 'invert' does not apply to method 'test_registry_mix'"):
        validate({**BASE, "prune": {"method": "test_registry_mix", "sparsity": 0.5, "ablation": "invert"}})


def test_registering_a_name_twice_is_refused():
    with pytest.raises(ValueError, match="'grasp' is registered twice"):
        register_method("grasp")(type("Again", (Scorer,), {}))


def test_an_options_model_must_be_a_method_options():
    from pydantic import BaseModel

    with pytest.raises(TypeError, match="MethodOptions"):
        register_method("test_registry_bad", options=type("O", (BaseModel,), {}))(type("S", (Scorer,), {}))


@pytest.mark.parametrize("old,value,new", [("grasp_temperature", 50.0, "prune.options.temperature (method grasp)"),
                                           ("px_variant", "official", "prune.options.variant (method px)"),
                                           ("magnitude_at", "trained", "prune.options.at (method magnitude)"),
                                           ("ntksap_draws", 3, "prune.options.draws (method ntksap)")])
def test_an_old_flat_field_names_its_new_path(old, value, new):
    with pytest.raises(ConfigError, match=rf"prune\.{old}: .*moved into the method's options: .*{new}".replace("(", r"\(").replace(")", r"\)")):
        validate({**BASE, "prune": {"method": "grasp", "sparsity": 0.5, old: value}})
    assert old in moved_fields()


def test_structured_modes_follow_the_capabilities():
    with pytest.raises(ConfigError, match="channel_keep .* does not apply to method 'phew'"):
        validate({**BASE, "prune": {"method": "phew", "sparsity": 0.5, "channel_keep": {"layers.0.weight": 0.5}}})


def test_the_builtin_method_modules_import_no_torch():
    code = ("import sys\nimport pruning.builtin_methods\nfrom pruning.registry import METHODS\n"
            "assert len(METHODS.names()) >= 18, METHODS.names()\n"
            "heavy = [m for m in ('torch', 'ray', 'numpy.linalg._umath_linalg_x') if m in sys.modules and m != 'numpy']\n"
            "assert 'torch' not in sys.modules, 'torch imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_method_options_are_searchable_in_conditional_spaces(tmp_path):
    import textwrap

    from pipelines.config import load_experiment, sweep_points

    cfg = tmp_path / "c.yaml"
    cfg.write_text(textwrap.dedent("""
        data: {name: digits}
        model: {name: mlp}
        sweep:
          optuna:
            num_samples: 4
            space: {prune.method: {type: categorical, choices: [grasp, prospr]}, prune.sparsity: {type: float, low: 0.5, high: 0.9}}
            conditional:
              prune.method:
                grasp: {prune.options.temperature: {type: float, low: 1.0, high: 400.0, log: true}}
                prospr: {prune.options.steps: {type: int, low: 0, high: 5}}
    """))
    parsed, _ = load_experiment(cfg)
    points = [p for _, p in sweep_points(parsed)]
    assert {"prune.method": "grasp", "prune.options.temperature": 400.0} in [
        {k: v for k, v in p.items() if k in ("prune.method", "prune.options.temperature")} for p in points]
    bad = cfg.read_text().replace("low: 1.0, high: 400.0", "low: -1.0, high: 400.0").replace(", log: true", "")
    cfg.write_text(bad)
    with pytest.raises(ConfigError, match=r"prune\.options\.temperature: Input should be greater than 0"):
        load_experiment(cfg)
