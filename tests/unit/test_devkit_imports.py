"""The daemon never imports the devkit (demo, simulators, private mosquitto): only the
`etong demo` and `etong simulate` verbs load it, when they run."""

from __future__ import annotations

import json
import subprocess
import sys

_LOADED_DEVKIT = """
import json, sys
import etong.daemon, etong.cli
etong.cli.build_parser()  # imports every verb's options module, demo and simulate included
print(json.dumps(sorted(name for name in sys.modules if name.startswith("etong.devkit"))))
"""


def test_the_daemon_and_the_cli_parser_load_no_devkit_module() -> None:
    # A fresh interpreter: this test process has imported the devkit already.
    out = subprocess.run(
        [sys.executable, "-c", _LOADED_DEVKIT], capture_output=True, text=True, check=True
    ).stdout

    assert json.loads(out) == []


def test_the_check_does_see_a_devkit_import() -> None:
    # The same probe after the demo verb's own import: it must report the devkit there.
    script = _LOADED_DEVKIT.replace("etong.cli.build_parser()", "import etong.devkit.demo")
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout

    assert "etong.devkit.demo" in json.loads(out)
