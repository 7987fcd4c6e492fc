"""Two models loading at once in a fresh process (transformers not imported yet:
its lazy first imports are not thread-safe) both become ready."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

_SCRIPT = textwrap.dedent("""
    import json, sys
    from PySide6.QtWidgets import QApplication
    app = QApplication([])
    assert "transformers" not in sys.modules  # the race needs a first import
    from qdesk.gui.jobs import JobRunner
    from qdesk.gui.model_registry import ModelRegistry
    from qdesk.gui.settings import Settings

    runner = JobRunner()
    runner.show_dialogs = False
    errors = []
    runner.error_shown.connect(lambda t, m: errors.append(m))
    models = ModelRegistry(runner, Settings())
    keys = [models.load(sys.argv[1], "auto"), models.load(sys.argv[1], "hf")]
    assert len(set(keys)) == 2 and len(runner.jobs) == 2  # both started together
    runner.idle.connect(app.quit)
    app.exec()
    print(json.dumps({"states": [models.entry(k).state for k in keys], "errors": errors}))
""")


def test_two_models_load_concurrently_in_a_fresh_process(tiny_llama, tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", QDESK_SETTINGS_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(tiny_llama)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"states": ["ready", "ready"], "errors": []}
