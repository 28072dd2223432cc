"""The console view travels with Tune's callbacks: it must pickle whatever replaced ``builtins.print``."""
import builtins

from ray import cloudpickle

from pipelines.live import SweepView


def test_the_view_pickles_after_print_is_replaced(monkeypatch, capsys):
    original = builtins.print
    monkeypatch.setattr(builtins, "print", lambda *a, **k: original(*a, **k))  # as Ray's tqdm support does
    say = cloudpickle.loads(cloudpickle.dumps(SweepView().say))
    say("still printed")
    assert "still printed" in capsys.readouterr().out
