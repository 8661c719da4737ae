"""``i24net envelope seal / inspect / open`` through click's CliRunner, on a demo home.

Exit codes: 0 ok, 1 error, 3 refused or failed verification, 6 unknown agency or group. Every failure is one line on
stderr, ``ERROR: <message> (<reason>)``, never a traceback.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest
from click.testing import Result

from i24net.config.home import Home
from i24net.core import envelope as env
from i24net.core.keys import AgencyKeys
from i24net.core.labels import Label

Run = Callable[..., Result]  # the ``run`` fixture (tests/cli/conftest.py)


def seal(run: Run, home: Path, out: Path, *extra: str, sender: str = "NCB-FR",
         to: str = "NCB-DE", level: str = "RESTRICTED", subject: str = "Wanted: J. Doe",
         text: str = "Seen at Gare de Lyon at 11:40.") -> Result:
    return run("envelope", "seal", "--home", home, "--as", sender, "--to", to,
               "--classification", level, "--subject", subject, "--text", text, "-o", out,
               *extra)


def sealed(run: Run, home: Path, out: Path, *extra: str, **kw: str) -> Path:
    result = seal(run, home, out, *extra, **kw)
    assert result.exit_code == 0, result.output
    return out


def open_as(run: Run, home: Path, file: Path, agency: str, *extra: str) -> Result:
    return run("envelope", "open", "--home", home, "--as", agency, file, *extra)


def clean_error(result: Result, code: int, *needles: str) -> str:
    """Exit ``code`` with exactly one stderr line ``ERROR: ...`` and no traceback."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("ERROR:"), lines[0]
    assert "Traceback" not in result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


# -- seal and open ---------------------------------------------------------------------------

def test_seal_then_open(run: Run, home: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.i24"
    result = seal(run, home, out, "--data", "case=FR-117", "--data", "colour=red")
    assert result.exit_code == 0, result.output
    assert "NCB-FR" in result.stdout and "1 recipient" in result.stdout
    opened = open_as(run, home, out, "NCB-DE")
    assert opened.exit_code == 0, opened.output
    assert "Wanted: J. Doe" in opened.stdout
    assert "Seen at Gare de Lyon at 11:40." in opened.stdout
    assert "case: FR-117" in opened.stdout and "from NCB-FR" in opened.stdout
    assert opened.stderr == ""


def test_open_json(run: Run, home: Path, tmp_path: Path) -> None:
    out = sealed(run, home, tmp_path / "m.i24", "--handling", "H2", "--tlp", "amber",
                 "--evaluation", "b2", "--precedence", "flash", "--caveat", "eu",
                 level="confidential", to="@EU")
    for agency in ("NCB-DE", "EUROPOL"):
        result = open_as(run, home, out, agency, "--json")
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["subject"] == "Wanted: J. Doe"
        assert doc["label"] == "CONFIDENTIAL//EU"
        assert doc["handling"] == "H2" and doc["tlp"] == "TLP:AMBER"
        assert doc["evaluation"] == "B2" and doc["precedence"] == "FLASH"
        assert doc["to"] == ["EUROPOL", "NCB-DE"] and doc["freshness"] == "fresh"


def test_body_file(run: Run, home: Path, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("line one\nligne deux, é\n")
    out = tmp_path / "m.i24"
    result = run("envelope", "seal", "--home", home, "--as", "NCB-FR", "--to", "NCB-DE",
                 "--classification", "RESTRICTED", "--subject", "s", "--body-file", body,
                 "-o", out)
    assert result.exit_code == 0, result.output
    assert "ligne deux, é" in open_as(run, home, out, "NCB-DE").stdout


def test_non_recipient_is_refused(run: Run, home: Path, tmp_path: Path) -> None:
    out = sealed(run, home, tmp_path / "m.i24")
    clean_error(open_as(run, home, out, "NCB-US"), 3, "not a recipient", "(not-recipient)")


def _node_verdict(home: Path, raw: bytes, agency: str) -> list[tuple[str, str]]:
    """What ``agency``'s node does with this envelope delivered by the router: (kind, reason)."""
    import hashlib
    import os

    from i24net.config.home import now_ms
    from i24net.core import frames as fr
    from i24net.core.keys import key_id
    from i24net.core.node import MemoryNodeStore, NodeMachine

    h = Home(home)
    d, router = h.directory(), h.router_keys()
    e = env.Envelope.parse(raw)
    stamp = fr.Stamp(e.header.id, hashlib.sha256(raw).digest(), e.header.sender, (agency,),
                     {agency: 1}, now_ms(), d.serial, key_id(router.verify_key))
    node = NodeMachine(agency, h.keys(agency), d, MemoryNodeStore(), random_bytes=os.urandom)
    events = node.handle(node.inbox_topic, fr.make_delivery(stamp, raw, router), now_ms())
    return [(ev.kind, ev.reason) for ev in events]


@pytest.mark.parametrize(("sender", "reader", "level", "caveats", "cleared"), [
    ("NCB-US", "NCB-ZA", "CONFIDENTIAL", (), "OFFICIAL-USE"),  # level too low
    ("NCB-FR", "NCB-US", "RESTRICTED", ("EU",), "CONFIDENTIAL"),  # caveat not held
])
def test_open_refuses_a_reader_whose_clearance_does_not_dominate_the_label(
        run: Run, home: Path, tmp_path: Path, sender: str, reader: str, level: str,
        caveats: tuple[str, ...], cleared: str) -> None:
    """The file names the reader as a recipient and its key unwraps it, but the reader is not
    cleared for the label (a router would not have delivered it, a node would refuse it):
    nothing of the content is shown, and the reason is the node's own code."""
    extra = [x for c in caveats for x in ("--caveat", c)]
    out = sealed(run, home, tmp_path / "m.i24", *extra, sender=sender, to=reader, level=level,
                 subject="Top subject", text="the secret text")
    marking = Home(home).directory().agencies[reader].clearance.marking
    assert marking == cleared
    for fmt in ((), ("--json",)):
        result = open_as(run, home, out, reader, *fmt)
        line = clean_error(result, 3, "(clearance.recipient)", f"{reader} is cleared to "
                           f"{cleared}", "is not shown")
        assert result.stdout == ""
        assert "Top subject" not in line and "the secret text" not in line
    # the node applies the same check and gives the same code
    assert _node_verdict(home, out.read_bytes(), reader) == [("refused-in",
                                                              "clearance.recipient")]
    # a cleared recipient of the same kind of file still opens it
    ok = sealed(run, home, tmp_path / "ok.i24", *extra, sender=sender, to="NCB-DE",
                level=level)
    assert open_as(run, home, ok, "NCB-DE").exit_code == 0
    assert _node_verdict(home, ok.read_bytes(), "NCB-DE")[0][0] == "received"


def test_repeated_recipient_still_opens(run: Run, home: Path, tmp_path: Path) -> None:
    out = sealed(run, home, tmp_path / "m.i24", to="NCB-DE,NCB-DE")
    assert open_as(run, home, out, "NCB-DE").exit_code == 0


# -- tampering -------------------------------------------------------------------------------

def test_single_bit_flips_anywhere_are_refused(run: Run, home: Path, tmp_path: Path) -> None:
    out = sealed(run, home, tmp_path / "m.i24")
    raw = out.read_bytes()
    bad = tmp_path / "bad.i24"
    for i in range(len(raw)):  # every byte, a different bit each time
        flipped = bytearray(raw)
        flipped[i] ^= 1 << (i % 8)
        bad.write_bytes(bytes(flipped))
        clean_error(open_as(run, home, bad, "NCB-DE"), 3)


@pytest.mark.parametrize("content", [b"", b"\x00", b"garbage" * 100, b"\x91" * 10_000,
                                     b"\xc6\xff\xff\xff\xff", b"\x94\xa4i24e\x02\xc4\x00"])
def test_garbage_files(run: Run, home: Path, tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.i24"
    bad.write_bytes(content)
    clean_error(open_as(run, home, bad, "NCB-DE"), 3)
    clean_error(run("envelope", "inspect", "--home", home, bad), 3)


def test_truncated_file(run: Run, home: Path, tmp_path: Path) -> None:
    raw = sealed(run, home, tmp_path / "m.i24").read_bytes()
    bad = tmp_path / "bad.i24"
    bad.write_bytes(raw[:-10])
    clean_error(open_as(run, home, bad, "NCB-DE"), 3, "truncated", "(wire.truncated)")


# -- revocation and rotation -----------------------------------------------------------------

def test_revoked_sender(run: Run, home: Path, tmp_path: Path) -> None:
    before = sealed(run, home, tmp_path / "before.i24")
    assert run("directory", "revoke", "NCB-FR", "--home", home).exit_code == 0
    clean_error(open_as(run, home, before, "NCB-DE"), 3, "revoked", "(sender.revoked)")
    after = tmp_path / "after.i24"
    result = seal(run, home, after)
    if result.exit_code == 0:  # a revoked agency's keys still sign; no one accepts them
        clean_error(open_as(run, home, after, "NCB-DE"), 3, "(sender.revoked)")
    else:  # or the CLI refuses to seal for a revoked sender in the first place
        clean_error(result, 3, "revoked")


def test_rotated_sender_key(run: Run, home: Path, tmp_path: Path) -> None:
    before = sealed(run, home, tmp_path / "before.i24")
    assert run("directory", "rotate", "NCB-FR", "--home", home).exit_code == 0
    clean_error(open_as(run, home, before, "NCB-DE"), 3, "(sig.unknown-key)")
    after = sealed(run, home, tmp_path / "after.i24")
    assert open_as(run, home, after, "NCB-DE").exit_code == 0


# -- inspect ---------------------------------------------------------------------------------

def test_inspect_json(run: Run, home: Path, tmp_path: Path) -> None:
    out = sealed(run, home, tmp_path / "m.i24", to="@G7-LIAISON")
    result = run("envelope", "inspect", "--home", home, "--json", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["signature_valid"] is True
    assert doc["from"] == "NCB-FR" and doc["to"] == ["NCB-DE", "NCB-JP", "NCB-US"]
    assert doc["addressing"] == ["@G7-LIAISON"] and doc["size"] == out.stat().st_size
    assert doc["label"] == "RESTRICTED"


def test_inspect_table_and_bad_signature(run: Run, home: Path, tmp_path: Path) -> None:
    out = sealed(run, home, tmp_path / "m.i24")
    table = run("envelope", "inspect", "--home", home, out)
    assert table.exit_code == 0 and "RESTRICTED" in table.stdout and "valid" in table.stdout
    raw = bytearray(out.read_bytes())
    raw[-1] ^= 0x01  # inside the signature: the header still parses
    out.write_bytes(bytes(raw))
    result = run("envelope", "inspect", "--home", home, "--json", out)
    assert result.exit_code == 3
    doc = json.loads(result.stdout)
    assert doc["signature_valid"] is False and "sig.invalid" in doc["signature"]


def test_inspect_shows_hostile_header_text_literally(run: Run, home: Path,
                                                     tmp_path: Path) -> None:
    """An unverified header may carry rich markup in its agency ids: print it, do not run it."""
    d = Home(home).directory()
    forger = AgencyKeys("[/]", b"\x01" * 32, b"\x02" * 32)
    header = env.Header(
        id=b"\x07" * 16, kind="message", sender="[/]", recipients=("NCB-DE",),
        addressing=("[bold]x[/bold]",), label=Label("RESTRICTED"),
        precedence=env.Precedence.ROUTINE, created_ms=1, expires_ms=2, directory_serial=1,
        key_id=b"\x00" * 8, nonce=b"\x00" * 24)
    de = d.agency("NCB-DE")
    raw = env.seal(header, env.Body("s"), forger, {"NCB-DE": (de.enc_key, de.prekey)},
                   random_bytes=lambda n: b"\x03" * n)
    bad = tmp_path / "forged.i24"
    bad.write_bytes(raw)
    table = run("envelope", "inspect", "--home", home, bad)
    assert table.exit_code == 3, (table.output, table.exception)
    assert "[/]" in table.stdout and "[bold]x[/bold]" in table.stdout
    clean_error(open_as(run, home, bad, "NCB-DE"), 3, "[/]", "(sender.unknown)")
    check = run("envelope", "check", "--home", home, bad)
    assert check.exit_code == 3, (check.output, check.exception)
    assert "refused" in check.stdout and "[/]" in check.stdout


# -- clean errors for bad options ------------------------------------------------------------

@pytest.mark.parametrize(("extra", "kw", "code", "needle"), [
    ((), {"level": "TOP-SECRET"}, 1, "(label.unknown-level)"),
    ((), {"level": "top secret"}, 1, "(config.label)"),
    (("--caveat", "NATO"), {}, 1, "(label.unknown-caveat)"),
    (("--handling", "H3"), {}, 1, "(label.h3-text)"),
    (("--handling", "H9"), {}, 1, "(label.handling)"),
    (("--tlp", "WHITE"), {}, 1, "(label.tlp)"),
    (("--evaluation", "B²"), {}, 1, "(label.evaluation)"),
    (("--evaluation", "Z1"), {}, 1, "(label.evaluation)"),
    ((), {"to": "@NOPE"}, 6, "(directory.unknown-group)"),
    ((), {"to": "@[/]"}, 6, "@[/]"),
    ((), {"to": "@X\nY"}, 6, "@X\\nY"),
    ((), {"to": "@AFRICA", "sender": "NCB-ZA"}, 3, "(addressing.empty)"),
    ((), {"to": "NCB-XX"}, 6, "NCB-XX"),
    ((), {"sender": "NCB-XX"}, 6, "NCB-XX"),
    ((), {"subject": "\udcff"}, 3, "encode"),
])
def test_bad_message_options(run: Run, home: Path, tmp_path: Path, extra: tuple[str, ...],
                             kw: dict[str, str], code: int, needle: str) -> None:
    out = tmp_path / "m.i24"
    clean_error(seal(run, home, out, *extra, **kw), code, needle)
    assert not out.exists()


def test_oversized_release_is_refused_at_seal(run: Run, home: Path, tmp_path: Path) -> None:
    release = tmp_path / "release.bin"
    release.write_bytes(b"r" * 5000)
    clean_error(seal(run, home, tmp_path / "m.i24", "--release", str(release)), 3,
                "(wire.schema)")


def test_markup_in_the_subject_is_printed_literally(run: Run, home: Path,
                                                    tmp_path: Path) -> None:
    out = sealed(run, home, tmp_path / "m.i24", subject="[/] [red]not red[/red]",
                 text="[bold]x")
    result = open_as(run, home, out, "NCB-DE")
    assert result.exit_code == 0, (result.output, result.exception)
    assert "[/] [red]not red[/red]" in result.stdout and "[bold]x" in result.stdout


def test_usage_errors_exit_2(run: Run, home: Path, tmp_path: Path) -> None:
    body = tmp_path / "body.txt"
    body.write_text("b")
    result = run("envelope", "seal", "--home", home, "--as", "NCB-FR", "--to", "NCB-DE",
                 "--classification", "RESTRICTED", "--subject", "s", "--text", "t",
                 "--body-file", body, "-o", tmp_path / "m")
    assert result.exit_code == 2 and "--text" in result.output
    assert run("envelope", "open", "--home", home, tmp_path / "missing").exit_code == 2


def test_unwritable_output(run: Run, home: Path, tmp_path: Path) -> None:
    clean_error(seal(run, home, tmp_path / "no" / "such" / "dir" / "m.i24"), 1, "(io)")


def test_unknown_opening_agency(run: Run, home: Path, tmp_path: Path) -> None:
    out = sealed(run, home, tmp_path / "m.i24")
    clean_error(open_as(run, home, out, "NCB-XX"), 6, "unknown agency NCB-XX")


def test_no_home(run: Run, tmp_path: Path) -> None:
    bad = tmp_path / "m.i24"
    bad.write_bytes(b"x")
    clean_error(open_as(run, tmp_path / "nowhere", bad, "NCB-DE"), 1, "no network at",
                "(config.home)")


def test_wraps_in_the_file_are_per_recipient(run: Run, home: Path, tmp_path: Path) -> None:
    out = sealed(run, home, tmp_path / "m.i24", to="@ALL")
    _, _, signed, _ = msgpack.unpackb(out.read_bytes())
    _, _, _, wraps, _ = msgpack.unpackb(signed)
    assert [w[0] for w in wraps] == sorted(["GS-LYON", "EUROPOL", "NCB-DE", "NCB-US",
                                            "NCB-BR", "NCB-JP", "NCB-ZA"])
