"""What the daemon refuses before it connects anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from etong.brokers.mqtt import MqttBroker
from etong.config import load_settings
from etong.errors import ConfigError
from etong.metrics import Metrics
from etong.runner import Identity, make_connections


def test_an_officer_broker_tls_file_that_does_not_load_is_a_config_error_naming_its_section(
    tmp_path: Path,
) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")
    config = tmp_path / "etong.toml"
    config.write_text('[officer_broker]\nurl = "mqtts://o"\nca_file = "ca.pem"\n', encoding="utf-8")
    settings = load_settings(config, {})

    with pytest.raises(ConfigError) as caught:
        make_connections(settings, MqttBroker, Metrics(), Identity(status_topic="s"))

    assert caught.value.source == str(config)
    assert caught.value.problems[0].startswith("officer_broker.ca_file: cannot load")
