"""What the daemon refuses before it connects anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from etong.config import load_settings
from etong.daemon import Daemon
from etong.errors import ConfigError


def test_an_officer_broker_tls_file_that_does_not_load_is_a_config_error_naming_its_section(
    tmp_path: Path,
) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate\n", encoding="utf-8")
    config = tmp_path / "etong.toml"
    config.write_text('[officer_broker]\nurl = "mqtts://o"\nca_file = "ca.pem"\n', encoding="utf-8")
    daemon = Daemon(load_settings(config, {}))

    with pytest.raises(ConfigError) as caught:
        daemon._make_brokers()

    assert caught.value.source == str(config)
    assert caught.value.problems[0].startswith("officer_broker.ca_file: cannot load")
