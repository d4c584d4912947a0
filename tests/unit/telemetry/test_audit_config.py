"""The [audit] section of warmstart.toml."""

from __future__ import annotations

from pathlib import Path

import pytest

from warmstart.config_loader import parse_config
from warmstart.errors import ConfigError


def test_defaults_keep_the_log_in_the_data_dir_and_require_it():
    config = parse_config({"server": {"data_dir": "/srv/ws"}}, base_dir=Path("/etc"))
    assert config.audit.required is True
    assert config.audit_dir == Path("/srv/ws/audit")
    assert config.audit.rotate_bytes == 16 * 1024 * 1024


def test_settings_are_read_and_a_relative_dir_is_relative_to_the_config_file():
    config = parse_config({"audit": {"required": False, "dir": "logs/audit", "rotate_bytes": 4096}},
                          base_dir=Path("/etc/warmstart"))
    assert config.audit.required is False
    assert config.audit_dir == Path("/etc/warmstart/logs/audit")
    assert config.audit.rotate_bytes == 4096


@pytest.mark.parametrize("audit, field", [
    ({"required": "yes"}, "audit.required"),
    ({"rotate_bytes": 10}, "audit.rotate_bytes"),
    ({"rotate_bytes": "big"}, "audit.rotate_bytes"),
    ({"dir": ""}, "audit.dir"),
    ({"keep": 3}, "audit.keep"),
    ("on", "audit"),
])
def test_a_bad_value_names_its_field(audit, field):
    with pytest.raises(ConfigError) as caught:
        parse_config({"audit": audit}, base_dir=Path("/"))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"config: {field} = ")
