"""``i24net audit verify / show`` through click's CliRunner: exit codes and output."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from i24net.cli import cli
from i24net.config.home import Home
from i24net.core.audit import AuditChain, encode_line
from i24net.core.keys import AgencyKeys

T0 = 1_767_225_600_000
KEYS = AgencyKeys("NCB-FR", hashlib.sha256(b"cli-audit-sign").digest(),
                  hashlib.sha256(b"cli-audit-enc").digest())


def make_log(tmp_path: Path, n: int = 20) -> tuple[Path, list[bytes], AuditChain]:
    chain = AuditChain()
    lines = []
    for i in range(n):
        e = chain.append("refuse" if i % 4 == 1 else "accept", at_ms=T0 + 1000 * i,
                         actor="router", msg_id=hashlib.sha256(b"%d" % i).digest()[:16],
                         reason="policy.clearance" if i % 4 == 1 else "",
                         details={"to": ["NCB-DE"]})
        lines.append(encode_line(e))
    path = tmp_path / "router.audit"
    write(path, lines)
    return path, lines, chain


def write(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_verify_good_file(tmp_path: Path) -> None:
    path, _, chain = make_log(tmp_path)
    result = run("audit", "verify", str(path))
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"valid: 20 entries, head {chain.head.hex()[:16]}"


def _edit(lines: list[bytes]) -> list[bytes]:
    obj = json.loads(lines[5])
    obj["reason"] = "policy.revoked"
    return [*lines[:5], json.dumps(obj, separators=(",", ":")).encode(), *lines[6:]]


@pytest.mark.parametrize(("tamper", "line", "why"), [
    (_edit, 6, "hash does not match"),
    (lambda ls: ls[:5] + ls[6:], 6, "index 6 where 5 was expected"),
    (lambda ls: [*ls[:5], ls[6], ls[5], *ls[7:]], 6, "index 6 where 5 was expected"),
    (lambda ls: [*ls[:5], b"{oops", *ls[5:]], 6, "not valid JSON"),
])
def test_verify_tampered_file_exits_3_with_one_line(tmp_path: Path, tamper, line: int,
                                                    why: str) -> None:
    path, lines, _ = make_log(tmp_path)
    write(path, tamper(lines))
    result = run("audit", "verify", str(path))
    assert result.exit_code == 3
    err = result.stderr.strip()
    assert "\n" not in err
    assert err.startswith("ERROR: ") and f"line {line}: " in err and why in err
    assert result.stdout == ""


def test_checkpoint_file_catches_truncation(tmp_path: Path) -> None:
    path, lines, chain = make_log(tmp_path)
    _, cp = chain.checkpoint(signer="NCB-FR", sign=KEYS.sign, at_ms=T0 + 99_000)
    cp_file = tmp_path / "router.checkpoint"
    cp_file.write_bytes(cp.encode_line())
    key = f"NCB-FR={KEYS.verify_key.hex()}"
    ok = run("audit", "verify", str(path), "--checkpoint", str(cp_file), "--key", key)
    assert ok.exit_code == 0 and "reaches the checkpoint" in ok.stdout
    write(path, lines[:15])
    assert run("audit", "verify", str(path)).exit_code == 0  # undetectable on its own
    cut = run("audit", "verify", str(path), "--checkpoint", str(cp_file), "--key", key)
    assert cut.exit_code == 3 and "line 16: " in cut.stderr and "removed from the end" in \
        cut.stderr
    wrong = run("audit", "verify", str(path), "--checkpoint", str(cp_file), "--key",
                "NCB-FR=" + "00" * 32)
    assert wrong.exit_code == 3


def test_bad_key_option_is_a_usage_error(tmp_path: Path) -> None:
    path, _, _ = make_log(tmp_path, 2)
    assert run("audit", "verify", str(path), "--key", "NCB-FR=zz").exit_code == 2


def test_show_table_and_tail(tmp_path: Path) -> None:
    path, _, chain = make_log(tmp_path)
    result = run("audit", "show", str(path), "--tail", "3")
    assert result.exit_code == 0, result.output
    assert "router" in result.stdout and "policy.clearance" in result.stdout
    assert chain.entries[-1].msg_id[:12] in result.stdout
    assert chain.entries[0].msg_id[:12] not in result.stdout


def test_show_json_is_one_object_per_line(tmp_path: Path) -> None:
    path, _, chain = make_log(tmp_path)
    result = run("audit", "show", str(path), "--json", "--tail", "2")
    assert result.exit_code == 0
    shown = [json.loads(line) for line in result.stdout.splitlines()]  # NDJSON
    assert len(result.stdout.splitlines()) == 2
    assert [e["index"] for e in shown] == [18, 19]
    assert shown[-1]["hash"] == chain.head.hex()


def test_show_refuses_a_malformed_line(tmp_path: Path) -> None:
    path, lines, _ = make_log(tmp_path, 3)
    write(path, [lines[0], b"[not, json]", lines[2]])
    result = run("audit", "show", str(path))
    assert result.exit_code == 3 and "line 2: " in result.stderr


def test_error_text_from_the_file_is_not_rich_markup(tmp_path: Path) -> None:
    path = tmp_path / "[bold]x.audit"
    path.write_bytes(b"[red]\n")
    result = run("audit", "verify", str(path))
    assert result.exit_code == 3 and "[bold]x.audit line 1: " in result.stderr


def test_checkpoint_keys_come_from_the_network_home(tmp_path: Path) -> None:
    home = tmp_path / "net"
    assert run("init", "--home", str(home)).exit_code == 0
    keys = Home(home).keys("NCB-FR")
    path, lines, chain = make_log(tmp_path)
    entry, cp = chain.checkpoint(signer="NCB-FR", sign=keys.sign, at_ms=T0 + 99_000)
    write(path, [*lines, chain.encode_line(entry)])
    cp_file = tmp_path / "router.checkpoint"
    cp_file.write_bytes(cp.encode_line())
    ok = run("audit", "verify", str(path), "--home", str(home), "--checkpoint", str(cp_file))
    assert ok.exit_code == 0, ok.output
    assert "1 signature(s) verified" in ok.stdout
    write(path, lines[:-1])
    cut = run("audit", "verify", str(path), "--home", str(home), "--checkpoint", str(cp_file))
    assert cut.exit_code == 3 and "(audit.truncated)" in cut.stderr


def test_an_oversized_line_is_refused_and_counted_as_one_line(tmp_path: Path) -> None:
    path, lines, _ = make_log(tmp_path, 4)
    write(path, [*lines[:2], b"x" * 200_000, *lines[2:]])
    result = run("audit", "verify", str(path))
    assert result.exit_code == 3 and "line 3: " in result.stderr and "limit" in result.stderr
    shown = run("audit", "show", str(path), "--tail", "3")
    assert shown.exit_code == 3 and "line 3: " in shown.stderr
    assert run("audit", "show", str(path), "--tail", "2").exit_code == 0


def test_show_says_what_a_drop_summary_stands_for(tmp_path: Path) -> None:
    """The router sums up drops beyond its audit bound in one entry; the table shows the
    count and the reasons, not an empty reason."""
    from i24net.core.events import DropSummary

    ev = DropSummary(sender="NCB-FR", count=9984, source="NCB-FR",
                     reasons=(("wire.magic", 9000), ("wire.truncated", 984)),
                     since_ms=1, until_ms=2)
    chain = AuditChain()
    entry = chain.append(ev.kind, at_ms=3, actor="router", details=ev.audit_details())
    path = tmp_path / "audit.jsonl"
    write(path, [encode_line(entry)])
    result = run("audit", "show", str(path))
    assert result.exit_code == 0, result.output
    words = [w.strip(":,") for w in result.output.split() if w not in "│┃"]
    assert words[words.index("9984"):words.index("9984") + 6] == [
        "9984", "dropped", "from", "NCB-FR", "wire.magic", "x9000"], result.output
    assert "drop-summary" in words and "x984" in words
