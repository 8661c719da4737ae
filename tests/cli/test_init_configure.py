"""``i24net init --engine/--port/--routers`` and ``presets.configure``."""

from __future__ import annotations

import tomllib
from pathlib import Path

from click.testing import CliRunner

from i24net.cli import cli
from i24net.home import Home
from i24net.presets import configure, preset_toml


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
