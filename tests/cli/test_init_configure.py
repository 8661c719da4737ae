"""``i24net init --engine/--port/--routers`` and ``presets.configure``."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from i24net.cli import cli
from i24net.config.home import Home
from i24net.config.presets import configure, preset_toml


def test_configure_sets_engine_port_and_shards_and_keeps_the_rest() -> None:
    text = configure(preset_toml("demo"), engine="nats", port=21_000, routers=2)
    doc = tomllib.loads(text)
    assert doc["broker"]["engine"] == "nats" and doc["broker"]["port"] == 21_000
    assert doc["router"] == {"shards": 2}
    assert doc["agency"] == tomllib.loads(preset_toml("demo"))["agency"]
    again = tomllib.loads(configure(text, routers=3))
    assert again["router"] == {"shards": 3}


def test_configure_adds_a_broker_table_when_there_is_none() -> None:
    bare = "\n".join(line for line in preset_toml("demo").splitlines()
                     if not line.startswith(("engine", "host", "port", "tls", "[broker]")))
    doc = tomllib.loads(configure(bare, engine="mosquitto", port=19_000))
    assert doc["broker"] == {"engine": "mosquitto", "port": 19_000}


def test_init_with_routers_lists_one_router_key_per_shard(tmp_path: Path) -> None:
    home = tmp_path / "h"
    result = CliRunner().invoke(cli, ["init", "--home", str(home), "--engine", "nats",
                                      "--routers", "3"])
    assert result.exit_code == 0, result.output
    h = Home(home)
    spec = h.spec()
    assert spec.broker.engine == "nats" and spec.broker.members == 3
    assert spec.router_shards == 3
    assert h.directory().router_keys == tuple(h.router_keys(k).verify_key for k in (1, 2, 3))
    assert len(spec.broker.member_addresses()) == 3


def test_router_refuses_a_shard_that_does_not_match_the_network(tmp_path: Path) -> None:
    home = tmp_path / "h"
    CliRunner().invoke(cli, ["init", "--home", str(home), "--routers", "2"])
    for args, text in ((["router", "--shard", "1/3"], "does not match"),
                       (["router"], "start one router per shard"),
                       (["router", "--shard", "0/2"], "k/K with 1 <= k")):
        result = CliRunner().invoke(cli, [*args, "--home", str(home)])
        assert result.exit_code == 1, result.output  # a configuration error
        assert text in result.output, result.output


COMMENTED = "[broker]  # where the agencies meet the network"


def _commented_demo() -> str:
    text = preset_toml("demo")
    assert "\n[broker]\n" in text
    return text.replace("\n[broker]\n", f"\n{COMMENTED}\n", 1)


def test_configure_edits_a_broker_table_whose_header_carries_a_comment() -> None:
    text = configure(_commented_demo(), engine="mosquitto", port=19_001, tls=False)
    doc = tomllib.loads(text)  # one [broker] table: a second one would not parse
    assert doc["broker"] == {"engine": "mosquitto", "host": "127.0.0.1", "port": 19_001,
                             "tls": False}
    assert COMMENTED in text.splitlines()
    assert text.replace('"mosquitto"', '"embedded"').replace("19001", "18830") \
        == _commented_demo()  # nothing else changed, layout and comments included


def test_configure_edits_inline_and_dotted_broker_tables() -> None:
    for text in ('broker = {engine = "embedded", port = 1}\n',
                 'broker.engine = "embedded"\nbroker.port = 1\n'):
        doc = tomllib.loads(configure(text, engine="nats", port=2, routers=1))
        assert doc == {"broker": {"engine": "nats", "port": 2}}, text


def test_configure_leaves_text_alone_when_nothing_is_set() -> None:
    text = "[network\nname="  # not TOML: the caller's parser reports it
    assert configure(text) == text


def test_configure_reports_text_that_is_not_toml_as_a_config_error() -> None:
    from i24net.core.errors import ConfigError

    with pytest.raises(ConfigError) as info:
        configure("[network\nname=", engine="nats")
    assert info.value.reason == "config.toml"


def test_init_from_a_spec_with_a_commented_broker_header(tmp_path: Path) -> None:
    spec_file = tmp_path / "network.toml"
    spec_file.write_text(_commented_demo())
    home = tmp_path / "h"
    result = CliRunner().invoke(cli, ["init", "--home", str(home), "--spec", str(spec_file),
                                      "--engine", "mosquitto", "--port", "19002"])
    assert result.exit_code == 0, result.output
    h = Home(home)
    assert h.spec().broker.engine == "mosquitto" and h.spec().broker.port == 19_002
    assert COMMENTED in h.spec_file.read_text().splitlines()
