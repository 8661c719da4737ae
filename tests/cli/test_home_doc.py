"""docs/home.md against a home made by ``i24net init``: every file it creates is documented
with its mode, the key files have exactly the documented layout, and the public keys derived
from them as the page says are the ones the signed directory lists."""

from __future__ import annotations

import re
import stat
from collections.abc import Callable
from pathlib import Path

import nacl.bindings as sodium
from click.testing import Result

from i24net.config.home import Home

Run = Callable[..., Result]  # the ``run`` fixture (tests/cli/conftest.py)

DOC = Path(__file__).resolve().parents[2] / "docs" / "home.md"
HEX = "[0-9a-f]{64}"


def doc() -> str:
    return DOC.read_text()


def init_table() -> dict[str, str]:
    """Path -> mode column of the table of what ``init`` creates (section 1)."""
    text = doc().split("## 1 Layout", 1)[1].split("Nothing else is written by `init`", 1)[0]
    rows = {}
    for line in text.splitlines():
        m = re.match(r"^\| `([^`]+)` \| ([^|]+) \|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    return rows


def code_block(after: str) -> str:
    """The first ```text block after the heading ``after``."""
    rest = doc().split(after, 1)[1]
    return rest.split("```text\n", 1)[1].split("```", 1)[0]


def key_file_pattern(name: str) -> re.Pattern[str]:
    """The documented key-file layout as a regular expression: the first three lines once,
    then the prekey table once per prekey, its ``retired_ms`` line optional."""
    block = code_block("### 2.1 Agency and router keys")
    head, prekey = block.split("\n\n", 1)

    def rx(lines: str) -> str:
        out = []
        for line in lines.splitlines():
            r = re.escape(line).replace(re.escape("<NAME>"), re.escape(name))
            r = r.replace(re.escape("<64 hex>"), HEX).replace(re.escape("<int>"), r"\d+")
            out.append(f"(?:{r}\n)?" if line.startswith("retired_ms") else f"{r}\n")
        return "".join(out)

    return re.compile(rx(head) + f"(?:\n{rx(prekey)})+")


def generalise(rel: str, agencies: set[str]) -> str:
    m = re.fullmatch(r"keys/(.+)\.key", rel)
    if m and m.group(1) in agencies:
        return "keys/<AGENCY>.key"
    if m and re.fullmatch(r"i24-router-\d+", m.group(1)):
        return "keys/i24-router-<k>.key"
    return rel


def test_every_file_init_creates_is_documented_with_its_mode(sharded: Path) -> None:
    h = Home(sharded)
    agencies = set(h.directory().agencies)
    table = init_table()
    found = {generalise(p.relative_to(sharded).as_posix(), agencies) + ("/" if p.is_dir()
                                                                        else "")
             for p in sharded.rglob("*")}
    assert found == set(table), "docs/home.md section 1 lists other files than init makes"
    for p in sharded.rglob("*"):
        row = table[generalise(p.relative_to(sharded).as_posix(), agencies)
                    + ("/" if p.is_dir() else "")]
        mode = stat.S_IMODE(p.stat().st_mode)
        if not row.startswith("umask"):
            assert f"{mode:04o}" == row, (p, row)


def test_key_files_have_exactly_the_documented_layout(home: Path, run: Run) -> None:
    h = Home(home)
    d = h.directory()
    names = [*d.agencies, "i24-router"]
    for name in names:
        text = (home / "keys" / f"{name}.key").read_text()
        assert key_file_pattern(name).fullmatch(text), (name, text)
        assert "retired_ms" not in text
    # after a prekey rotation the old prekey stays, retired, in the documented form
    result = run("directory", "rotate-prekeys", "--home", home, "NCB-FR")
    assert result.exit_code == 0, result.output
    text = (home / "keys" / "NCB-FR.key").read_text()
    assert key_file_pattern("NCB-FR").fullmatch(text), text
    assert text.count("[[prekey]]") == 2 and text.count("retired_ms = ") == 1
    assert code_block("### 2.2 `keys/authority.key`") == 'seed = "<64 hex>"\n'
    assert re.fullmatch(f'seed = "{HEX}"\n', (home / "keys" / "authority.key").read_text())


def _toml_hex(text: str, key: str) -> list[bytes]:
    return [bytes.fromhex(v) for v in re.findall(rf'^{key} = "({HEX})"$', text, re.M)]


def test_public_keys_derived_as_documented_are_the_directorys(home: Path, run: Run) -> None:
    """What section 2 tells another implementation to do, done without i24net's loaders."""
    run("directory", "rotate-prekeys", "--home", home, "NCB-DE")
    h = Home(home)
    d = h.directory()
    for rec in d.agencies.values():
        text = (home / "keys" / f"{rec.id}.key").read_text()
        (seed,), (secret,) = _toml_hex(text, "signing_seed"), _toml_hex(text, "encryption_secret")
        assert sodium.crypto_sign_seed_keypair(seed)[0] == rec.sign_key
        assert sodium.crypto_scalarmult_base(secret) == rec.enc_key
        prekeys = text.split("[[prekey]]")[1:]
        current = [p for p in prekeys if "retired_ms" not in p]
        assert len(current) == 1
        assert sodium.crypto_scalarmult_base(_toml_hex(current[0], "secret")[0]) == rec.prekey
    router = (home / "keys" / "i24-router.key").read_text()
    assert sodium.crypto_sign_seed_keypair(_toml_hex(router, "signing_seed")[0])[0] \
        == d.router_keys[0]
    anchor = (home / "authority.pub").read_bytes()
    assert len(anchor) == 65 and anchor.endswith(b"\n")
    assert bytes.fromhex(anchor.decode()) == d.authority_key
    (authority,) = _toml_hex((home / "keys" / "authority.key").read_text(), "seed")
    assert sodium.crypto_sign_seed_keypair(authority)[0] == d.authority_key
    held = (home / "state" / "directory.held").read_text()
    assert held == f"{d.serial} {d.digest.hex()}\n"


def test_broker_passwords_file_as_documented(home: Path) -> None:
    h = Home(home)
    lines = (home / "keys" / "broker.toml").read_text().splitlines()
    accounts = [re.fullmatch(r'"([^"]+)" = "([A-Za-z0-9_-]{32})"', x) for x in lines]
    assert all(accounts), lines
    names = [m.group(1) for m in accounts if m]
    assert names == sorted(names) == sorted([*h.directory().agencies, "i24-router"])
    assert code_block("### 2.3 `keys/broker.toml`") == '"<ACCOUNT>" = "<password>"\n'
