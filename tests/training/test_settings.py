"""The settings modules import no torch, and every name they declare has an implementation (and no
implementation goes undeclared: registering one raises)."""
import subprocess
import sys

import pytest

from training.registry import Registry


def test_every_declared_name_is_implemented():
    from distill.config import DISTILLER_DECLS
    from distill.methods import DISTILLERS
    from pruning.registry import METHODS
    from training.data import DATASETS
    from training.models import MODELS
    from training.settings import DATASET_DECLS, MODEL_DECLS

    assert DATASETS.names() == DATASET_DECLS.names()
    assert MODELS.names() == MODEL_DECLS.names()
    assert all(MODELS.get(n).options_cls is MODEL_DECLS.get(n).options for n in MODEL_DECLS.names())
    assert DISTILLERS.names() == DISTILLER_DECLS.names()
    for name in METHODS.names():  # every method has a scorer or a plan that resolves
        spec = METHODS.get(name)
        assert spec.scorer is not None or callable(spec.resolve_plan()), name


def test_a_name_registered_twice_is_refused():
    reg = Registry("thing")
    reg.register("a")(object())
    with pytest.raises(ValueError, match="'a' is registered twice"):
        reg.register("a")(object())


def test_validating_a_config_imports_neither_torch_nor_ray(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(open("configs/quickstart.yaml").read().replace("sparsity: 0.9", "sparsity: 1.9"))
    code = (
        "import sys\n"
        "from pipelines.cli import main\n"
        "from pipelines.config import load_experiment\n"
        "load_experiment('configs/quickstart.yaml')\n"
        f"assert main(['run', {str(bad)!r}, '--out', {str(tmp_path / 'out')!r}]) == 2\n"
        "heavy = [m for m in ('torch', 'ray', 'torchvision', 'mlflow', 'optuna') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("first", ["distill.dm", "distill.dc", "distill.mtt", "distill.coresets"])
def test_every_implementation_registers_whichever_module_is_imported_first(first):
    """The distillation modules and their registry import each other; none may be left half-registered."""
    code = (f"import {first}\n"
            "from distill.methods import DISTILLERS\nfrom distill.config import DISTILL_METHODS\n"
            "from training.models import MODELS\nfrom training.settings import MODEL_OPTIONS\n"
            "assert sorted(DISTILLERS.names()) == sorted(DISTILL_METHODS), DISTILLERS.names()\n"
            "assert sorted(MODELS.names()) == sorted(MODEL_OPTIONS)\n")
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
