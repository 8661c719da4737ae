"""``i24net init`` and ``i24net directory show / verify / rotate / revoke / issue``."""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Callable
from pathlib import Path

import nacl.signing
import pytest
from click.testing import Result

from i24net.config.presets import preset_toml

Run = Callable[..., Result]  # the ``run`` fixture (tests/cli/conftest.py)

DEMO_IDS = ["EUROPOL", "GS-LYON", "NCB-BR", "NCB-DE", "NCB-FR", "NCB-JP", "NCB-US", "NCB-ZA"]


def clean_error(result: Result, code: int, *needles: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ERROR:"), result.stderr
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def show(run: Run, home: Path) -> dict:  # type: ignore[type-arg]
    result = run("directory", "show", "--json", "--home", home)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


# -- init ------------------------------------------------------------------------------------

def test_init_writes_the_home(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "home"
    result = run("init", "--home", path)
    assert result.exit_code == 0, result.output
    assert "8 agencies" in result.stdout and "version 1" in result.stdout
    assert (path / "network.toml").read_text() == preset_toml("demo")
    assert (path / "directory.signed").stat().st_size > 0
    assert len(bytes.fromhex((path / "authority.pub").read_text().strip())) == 32
    for agency in DEMO_IDS:
        key = path / "keys" / f"{agency}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((path / "keys" / "authority.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((path / "keys").stat().st_mode) == 0o700
    serial, digest = (path / "state" / "directory.held").read_text().split()
    assert serial == "1" and digest == show(run, path)["digest"]


def test_init_refuses_to_overwrite(run: Run, home: Path) -> None:
    before = (home / "authority.pub").read_text()
    clean_error(run("init", "--home", home), 1, "already exists", "(config.home)")
    assert (home / "authority.pub").read_text() == before
    stale = [home / "state" / "nodes" / "NCB-FR.sqlite", home / "logs" / "audit-NCB-FR.jsonl",
             home / "keys" / "LEA-GONE.key"]
    for path in stale:  # what the old network left: it belongs to the old keys
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("old")
    (home / "notes.txt").write_text("mine")
    assert run("init", "--home", home, "--force").exit_code == 0
    assert (home / "authority.pub").read_text() != before
    assert not any(p.exists() for p in stale)
    assert (home / "notes.txt").read_text() == "mine"


def test_init_interpol(run: Run, tmp_path: Path) -> None:
    assert run("init", "--preset", "interpol", "--home", tmp_path / "h").exit_code == 0
    doc = show(run, tmp_path / "h")
    assert len(doc["agencies"]) == 198


def test_init_from_a_bad_spec(run: Run, tmp_path: Path) -> None:
    spec = tmp_path / "network.toml"
    spec.write_text(preset_toml("demo").replace('EU = ["NCB-FR", "NCB-DE", "EUROPOL"]',
                                                'EU = ["NCB-FR", "NCB-FR"]'))
    clean_error(run("init", "--spec", spec, "--home", tmp_path / "h"), 1, "groups.EU")
    spec.write_text(preset_toml("demo").replace('region = "AFRICA"', 'region = "NCB"'))
    clean_error(run("init", "--spec", spec, "--home", tmp_path / "h2"), 1, "region")
    spec.write_text("[network\nname=")
    clean_error(run("init", "--spec", spec, "--home", tmp_path / "h3"), 1, "(config.toml)")


def test_markup_in_names_is_printed_literally(run: Run, tmp_path: Path) -> None:
    spec = tmp_path / "network.toml"
    spec.write_text(preset_toml("demo").replace('name = "demo"', 'name = "d[/]"')
                    .replace('name = "NCB Paris"', 'name = "P[/]"'))
    path = tmp_path / "h[x]"
    result = run("init", "--spec", spec, "--home", path)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "d[/]" in result.stdout
    for command in (("directory", "show"), ("directory", "verify")):
        result = run(*command, "--home", path)
        assert result.exit_code == 0, (result.output, result.exception)
        assert "d[/]" in result.stdout
    assert "P[/]" in run("directory", "show", "--home", path).stdout


# -- show and verify -------------------------------------------------------------------------

def test_show_json(run: Run, home: Path) -> None:
    doc = show(run, home)
    assert doc["network"] == "demo" and doc["serial"] == 1
    assert [a["id"] for a in doc["agencies"]] == DEMO_IDS
    assert all(a["status"] == "active" and a["key_version"] == 1 for a in doc["agencies"])
    fr = next(a for a in doc["agencies"] if a["id"] == "NCB-FR")
    assert fr["clearance"] == "CONFIDENTIAL//EU"
    assert fr["groups"] == ["@ALL", "@NCB", "@EUROPE", "@EU", "@G7-LIAISON"]
    assert doc["groups"]["EU"] == ["EUROPOL", "NCB-DE", "NCB-FR"]
    assert doc["authority_key"] == (home / "authority.pub").read_text().strip()


def test_show_table(run: Run, home: Path) -> None:
    result = run("directory", "show", "--home", home)
    assert result.exit_code == 0
    assert "NCB-FR" in result.stdout and "directory v1" in result.stdout


def test_verify(run: Run, home: Path) -> None:
    result = run("directory", "verify", "--home", home)
    assert result.exit_code == 0 and "valid" in result.stdout
    result = run("directory", "verify", home / "directory.signed", "--home", home)
    assert result.exit_code == 0 and "version 1" in result.stdout


def test_tampered_directory(run: Run, home: Path) -> None:
    raw = bytearray((home / "directory.signed").read_bytes())
    raw[len(raw) // 2] ^= 0x04
    (home / "directory.signed").write_bytes(bytes(raw))
    clean_error(run("directory", "verify", "--home", home), 3, "(sig.invalid)")
    clean_error(run("directory", "show", "--home", home), 3)


def test_truncated_directory(run: Run, home: Path) -> None:
    raw = (home / "directory.signed").read_bytes()
    (home / "directory.signed").write_bytes(raw[: len(raw) // 3])
    clean_error(run("directory", "verify", "--home", home), 3, "(wire.truncated)")


def test_wrong_trust_anchor(run: Run, home: Path) -> None:
    other = bytes(nacl.signing.SigningKey(b"\x05" * 32).verify_key)
    (home / "authority.pub").write_text(other.hex() + "\n")
    clean_error(run("directory", "verify", "--home", home), 3, "(sig.invalid)")
    (home / "authority.pub").write_text("not hex\n")
    clean_error(run("directory", "verify", "--home", home), 1, "(config.keys)")


def test_directory_from_another_network(run: Run, home: Path, tmp_path: Path) -> None:
    assert run("init", "--home", tmp_path / "other").exit_code == 0
    clean_error(run("directory", "verify", tmp_path / "other" / "directory.signed",
                    "--home", home), 3, "(sig.invalid)")


# -- revoke, rotate, issue -------------------------------------------------------------------

def test_revoke(run: Run, home: Path) -> None:
    result = run("directory", "revoke", "NCB-FR", "--home", home)
    assert result.exit_code == 0 and "version 2" in result.stdout
    doc = show(run, home)
    assert doc["serial"] == 2
    assert {a["id"]: a["status"] for a in doc["agencies"]}["NCB-FR"] == "revoked"
    clean_error(run("directory", "revoke", "NCB-FR", "--home", home), 3,
                "(directory.revoked)")
    clean_error(run("directory", "revoke", "NCB-XX", "--home", home), 6,
                "(directory.unknown-agency)")
    assert show(run, home)["serial"] == 2


def test_rotate(run: Run, home: Path) -> None:
    old_key = (home / "keys" / "NCB-DE.key").read_text()
    before = {a["id"]: a for a in show(run, home)["agencies"]}
    result = run("directory", "rotate", "NCB-DE", "--home", home)
    assert result.exit_code == 0 and "key version 2" in result.stdout
    after = {a["id"]: a for a in show(run, home)["agencies"]}
    assert after["NCB-DE"]["key_version"] == 2
    assert after["NCB-DE"]["sign_key"] != before["NCB-DE"]["sign_key"]
    assert after["NCB-DE"]["enc_key"] != before["NCB-DE"]["enc_key"]
    assert after["NCB-FR"] == before["NCB-FR"]
    assert (home / "keys" / "NCB-DE.key").read_text() != old_key
    assert stat.S_IMODE((home / "keys" / "NCB-DE.key").stat().st_mode) == 0o600
    clean_error(run("directory", "rotate", "NCB-XX", "--home", home), 6, "NCB-XX")


def test_issue_after_editing_the_spec(run: Run, home: Path) -> None:
    spec = home / "network.toml"
    spec.write_text(spec.read_text() + '\n[[agency]]\nid = "NCB-IT"\nname = "NCB Rome"\n'
                    'kind = "ncb"\nregion = "EUROPE"\nclearance = "CONFIDENTIAL"\n'
                    'caveats = ["EU"]\nroles = []\n')
    assert run("directory", "revoke", "NCB-ZA", "--home", home).exit_code == 0
    result = run("directory", "issue", "--home", home)
    assert result.exit_code == 0, result.output
    doc = show(run, home)
    assert doc["serial"] == 3 and len(doc["agencies"]) == 9
    statuses = {a["id"]: a["status"] for a in doc["agencies"]}
    assert statuses["NCB-IT"] == "active" and statuses["NCB-ZA"] == "revoked"
    assert (home / "keys" / "NCB-IT.key").exists()


def test_issue_with_a_broken_spec(run: Run, home: Path) -> None:
    spec = home / "network.toml"
    spec.write_text(spec.read_text().replace('clearance = "RESTRICTED"',
                                             'clearance = "COSMIC"', 1))
    clean_error(run("directory", "issue", "--home", home), 1, "clearance")
    assert show(run, home)["serial"] == 1


# -- rollback and fork -----------------------------------------------------------------------

def test_rolled_back_directory_file_is_refused(run: Run, home: Path, tmp_path: Path) -> None:
    v1 = tmp_path / "v1.signed"
    shutil.copy(home / "directory.signed", v1)
    assert run("directory", "revoke", "NCB-FR", "--home", home).exit_code == 0  # v2
    clean_error(run("directory", "verify", v1, "--home", home), 3, "(directory.rollback)")
    shutil.copy(v1, home / "directory.signed")  # an attacker restores the old file
    clean_error(run("directory", "verify", "--home", home), 3, "(directory.rollback)")
    clean_error(run("directory", "show", "--home", home), 3, "(directory.rollback)")


def test_forked_directory_is_refused(run: Run, home: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(home, twin)  # same authority key, same v1
    assert run("directory", "revoke", "NCB-FR", "--home", home).exit_code == 0
    assert run("directory", "revoke", "NCB-US", "--home", twin).exit_code == 0
    clean_error(run("directory", "verify", twin / "directory.signed", "--home", home), 3,
                "(directory.fork)")
    # the same v2 again is fine, and a newer one is accepted
    assert run("directory", "verify", home / "directory.signed", "--home", home).exit_code == 0
    assert run("directory", "revoke", "NCB-JP", "--home", twin).exit_code == 0
    assert run("directory", "verify", twin / "directory.signed", "--home", home).exit_code == 0


def test_forked_directory_file_in_the_home_is_refused(run: Run, home: Path,
                                                       tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(home, twin)
    assert run("directory", "revoke", "NCB-FR", "--home", home).exit_code == 0
    assert run("directory", "revoke", "NCB-US", "--home", twin).exit_code == 0
    shutil.copy(twin / "directory.signed", home / "directory.signed")  # same serial 2
    clean_error(run("directory", "show", "--home", home), 3, "(directory.fork)")


def test_old_rollback_guard_without_digest(run: Run, home: Path) -> None:
    (home / "state" / "directory.held").write_text("1\n")  # the format before digests
    assert run("directory", "show", "--home", home).exit_code == 0
    (home / "state" / "directory.held").write_text("2\n")
    clean_error(run("directory", "show", "--home", home), 3, "(directory.rollback)")


@pytest.mark.parametrize("content", ["", "two\n", "\x00"])
def test_corrupt_rollback_guard(run: Run, home: Path, content: str) -> None:
    (home / "state" / "directory.held").write_text(content)
    clean_error(run("directory", "show", "--home", home), 1, "directory.held", "corrupt")


@pytest.mark.parametrize("command", [("directory", "show"), ("directory", "verify"),
                                     ("directory", "revoke", "NCB-FR")])
def test_commands_need_a_home(run: Run, tmp_path: Path, command: tuple[str, ...]) -> None:
    clean_error(run(*command, "--home", tmp_path / "nowhere"), 1, "no network at")
