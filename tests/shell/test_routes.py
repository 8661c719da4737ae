"""``broker/routes.json``: per-account broker addresses (a fault proxy per agency)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from i24net.config.home import Home
from i24net.config.presets import preset_toml
from i24net.core.errors import ConfigError
from i24net.shell.runtime import Endpoint, route, routes_file


@pytest.fixture
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "home")
    h.init(preset_toml("demo"))
    return h


def test_an_account_listed_is_routed_and_the_others_are_not(home: Home) -> None:
    ep = Endpoint("embedded", "127.0.0.1", 18830)
    assert route(home, "NCB-FR", ep) == ep  # no file: unchanged
    routes_file(home).write_text(json.dumps({"NCB-FR": "127.0.0.1:40001"}))
    fr = route(home, "NCB-FR", ep)
    assert (fr.host, fr.port, fr.members) == ("127.0.0.1", 40001, [("127.0.0.1", 40001)])
    assert route(home, "NCB-DE", ep) == ep


@pytest.mark.parametrize("text", ['{"NCB-FR": "10.0.0.1:1883"}', '{"NCB-FR": "nonsense"}',
                                  "not json"])
def test_a_bad_route_is_refused_with_a_config_error(home: Home, text: str) -> None:
    routes_file(home).write_text(text)
    with pytest.raises(ConfigError) as info:
        route(home, "NCB-FR", Endpoint("embedded", "127.0.0.1", 18830))
    assert info.value.reason == "config.broker"
