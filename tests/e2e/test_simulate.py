"""`etong simulate` against a real bridge, reading its config as the daemon does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from etong.config import without_env_overrides
from etong.localbroker import LocalBridge, LocalMosquitto, free_port
from tests.e2e.helpers import INSTANCE_ID, write_config

pytestmark = pytest.mark.e2e


def test_simulate_follows_the_broker_override_the_daemon_would_follow(
    bridge: LocalBridge, mosquitto: LocalMosquitto, roster_path: Path, tmp_path: Path
) -> None:
    # The file names a broker nobody listens on; only the override names the bridge's broker.
    config = write_config(
        tmp_path / "simulate.toml",
        broker_url=f"mqtt://127.0.0.1:{free_port()}",
        roster_path=roster_path,
    )
    env = {**without_env_overrides(os.environ), "ETONG_BROKER__URL": mosquitto.url}

    simulate = ("simulate", "--config", str(config), "--rate", "20", "--duration", "1")
    result = subprocess.run(
        [sys.executable, "-m", "etong", *simulate, "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"bridge {INSTANCE_ID} is online on {mosquitto.url}" in result.stdout, output
    assert "published 20 reports" in result.stdout, output
    assert "accepted 20" in result.stdout, output
