"""Settings come from the environment with clear errors."""

import pytest

from lineside.errors import ConfigError
from lineside.settings import Connection, load
from services.gateway.settings import GatewaySettings


def test_shared_and_prefixed_variables(monkeypatch):
    monkeypatch.setenv("LINESIDE_MQTT_PORT", "18999")
    monkeypatch.setenv("LINESIDE_DATA_DIR", "/srv/lineside")
    monkeypatch.setenv("LINESIDE_GATEWAY_TOP_K", "6")
    s = load(GatewaySettings, "LINESIDE_GATEWAY_")
    assert (s.mqtt_port, s.data_dir, s.top_k) == (18999, "/srv/lineside", 6)


def test_bad_value_names_the_field(monkeypatch):
    monkeypatch.setenv("LINESIDE_MQTT_PORT", "not-a-port")
    with pytest.raises(ConfigError, match="mqtt_port"):
        load(Connection, "LINESIDE_")


def test_overrides_win(monkeypatch):
    monkeypatch.setenv("LINESIDE_MQTT_PORT", "1")
    assert load(Connection, "LINESIDE_", {"mqtt_port": 2}).mqtt_port == 2
