"""The ``prunetune`` command exits without the interpreter's module teardown (seconds after a sweep),
but only after what that teardown would do that matters: threads joined, atexit handlers run, the
streams flushed; and with main's exit code."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import atexit, sys, threading, time
    from pathlib import Path
    import pipelines.cli as cli
    out = Path(sys.argv[1])

    class Finalized:  # collected only by the interpreter's teardown of this module
        def __del__(self):
            (out / "teardown").write_text("ran")
    keep = Finalized()
    atexit.register(lambda: (out / "atexit").write_text("ran"))
    def late():
        time.sleep(0.3)
        (out / "thread").write_text("ran")
    threading.Thread(target=late).start()
    cli.main = lambda argv=None: (print("buffered line", end=""), 3)[1]
    cli.console_main()
""")


def test_console_exit_skips_teardown_but_not_what_matters(tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == "buffered line"  # flushed although never followed by a newline
    assert (tmp_path / "thread").read_text() == "ran"  # a non-daemon thread finished
    assert (tmp_path / "atexit").read_text() == "ran"
    assert not (tmp_path / "teardown").exists()  # the module teardown was skipped


def test_console_script_is_console_main():
    text = (ROOT / "pyproject.toml").read_text()
    assert 'prunetune = "pipelines.cli:console_main"' in text
