"""``i24net operation`` and ``i24net agreement``: each change is a new directory version;
on a running network (``i24net up``) a member removed from an operation receives nothing
more under its caveat."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Run
from livekit import cli, network_up

from i24net.broker import pick_free_port


def show(run: Run, home: Path) -> dict[str, Any]:
    result = run("directory", "show", "--json", "--home", home)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def operations(run: Run, home: Path) -> dict[str, dict[str, object]]:
    result = run("operation", "list", "--json", "--home", home)
    assert result.exit_code == 0, result.output
    return {op["name"]: op for op in json.loads(result.stdout)}


def test_create_add_remove_close_each_issue_a_version(run: Run, home: Path) -> None:
    created = run("operation", "create", "TRIDENT", "--lead", "NCB-FR", "--members",
                  "NCB-DE,EUROPOL", "--until", "30d", "--title", "Trafficking network",
                  "--home", home)
    assert created.exit_code == 0, created.output
    assert "version 2" in created.stdout
    op = operations(run, home)["TRIDENT"]
    assert (op["lead"], op["members"], op["level"], op["state"], op["title"]) == (
        "NCB-FR", ["EUROPOL", "NCB-DE", "NCB-FR"], "CONFIDENTIAL", "active",
        "Trafficking network")
    assert run("operation", "add", "TRIDENT", "NCB-US", "--home", home).exit_code == 0
    assert run("operation", "remove", "TRIDENT", "NCB-DE", "--home", home).exit_code == 0
    op = operations(run, home)["TRIDENT"]
    assert op["members"] == ["EUROPOL", "NCB-FR", "NCB-US"] and op["removed"] == ["NCB-DE"]
    closed = run("operation", "close", "TRIDENT", "--home", home)
    assert closed.exit_code == 0 and "version 5" in closed.stdout
    assert operations(run, home)["TRIDENT"]["state"] == "closed"
    assert show(run, home)["serial"] == 5


def test_set_hands_the_lead_on_and_moves_the_end(run: Run, home: Path) -> None:
    assert run("operation", "create", "TRIDENT", "--lead", "NCB-FR", "--members", "NCB-DE",
               "--until", "30d", "--home", home).exit_code == 0
    refused = run("operation", "remove", "TRIDENT", "NCB-FR", "--home", home)
    assert refused.exit_code == 3 and "hand the lead on first" in refused.output
    before = operations(run, home)["TRIDENT"]["until_ms"]
    moved = run("operation", "set", "TRIDENT", "--lead", "NCB-US", "--until", "60d",
                "--level", "RESTRICTED", "--home", home)
    assert moved.exit_code == 0, moved.output
    op = operations(run, home)["TRIDENT"]
    assert (op["lead"], op["level"]) == ("NCB-US", "RESTRICTED")
    assert "NCB-US" in op["members"] and op["until_ms"] > before
    assert run("operation", "remove", "TRIDENT", "NCB-FR", "--home", home).exit_code == 0
    nothing = run("operation", "set", "TRIDENT", "--home", home)
    assert nothing.exit_code == 1 and "nothing to change" in nothing.output
    doc = show(run, home)
    assert [o["name"] for o in doc["operations"]] == ["TRIDENT"]
    assert {a["id"]: a["org"] for a in doc["agencies"]}["EUROPOL"] == "EUROPOL"


@pytest.mark.parametrize(("args", "code", "text"), [
    (("create", "trident", "--lead", "NCB-FR", "--members", "NCB-DE", "--until", "1d"), 1,
     "operation name"),
    (("create", "TRIDENT", "--lead", "NCB-XX", "--members", "NCB-DE", "--until", "1d"), 6,
     "NCB-XX"),
    (("create", "TRIDENT", "--lead", "NCB-FR", "--members", "NCB-DE", "--until",
      "2020-01-01"), 1, "already passed"),
    (("create", "TRIDENT", "--lead", "NCB-FR", "--members", "NCB-DE", "--until", "soon"), 1,
     "neither a date"),
    (("create", "EU", "--lead", "NCB-FR", "--members", "NCB-DE", "--until", "1d"), 3,
     "already a caveat or group"),
    (("remove", "NOPE", "NCB-DE"), 3, "no operation NOPE"),
])
def test_operation_errors_say_what_to_do(run: Run, home: Path, args: tuple[str, ...],
                                         code: int, text: str) -> None:
    result = run("operation", *args, "--home", home)
    assert result.exit_code == code, result.output
    assert text in result.output
    assert show(run, home)["serial"] == 1  # nothing issued


def test_agreement_list_and_end(run: Run, home: Path) -> None:
    listed = run("agreement", "list", "--json", "--home", home)
    assert listed.exit_code == 0, listed.output
    (agr,) = json.loads(listed.stdout)
    assert (agr["id"], agr["parties"], agr["state"]) == (
        "INTERPOL-EUROPOL", ["INTERPOL", "EUROPOL"], "active")
    assert {f["from"] for f in agr["flows"]} == {"INTERPOL", "EUROPOL"}
    ended = run("agreement", "end", "INTERPOL-EUROPOL", "--home", home)
    assert ended.exit_code == 0, ended.output
    (agr,) = json.loads(run("agreement", "list", "--json", "--home", home).stdout)
    assert agr["state"] == "expired"
    missing = run("agreement", "end", "NOPE", "--home", home)
    assert missing.exit_code == 3 and "INTERPOL-EUROPOL" in missing.output


# -- on a running network -----------------------------------------------------------------

def adoptions(home: Path, who: tuple[str, ...]) -> dict[str, int]:
    """How many directory versions each daemon (``router`` or an agency) has adopted."""
    out = {}
    for w in who:
        path = home / "logs" / f"audit-{w}.jsonl"
        lines = path.read_text().splitlines() if path.exists() else []
        out[w] = sum(1 for line in lines if json.loads(line)["event"] == "directory")
    return out


def change(home: Path, *args: str) -> None:
    """Run ``i24net operation ARGS`` and wait until the router and the nodes concerned
    adopted the version it published."""
    who = ("router", "NCB-FR", "NCB-DE", "NCB-US")
    before = adoptions(home, who)
    r = cli(home, "operation", *args)
    assert r.returncode == 0 and "published version" in r.stdout, r.stdout + r.stderr
    deadline = time.monotonic() + 20
    while any(n <= before[w] for w, n in adoptions(home, who).items()):
        assert time.monotonic() < deadline, f"not adopted: {adoptions(home, who)}"
        time.sleep(0.1)


def publish(home: Path, to: str, subject: str) -> tuple[int, dict[str, object] | str]:
    r = cli(home, "publish", "--as", "NCB-FR", "--to", to, "--classification", "RESTRICTED",
            "--caveat", "TRIDENT", "--subject", subject, "--json", "--wait", "20")
    try:
        return r.returncode, json.loads(r.stdout)
    except json.JSONDecodeError:
        return r.returncode, r.stdout + r.stderr


def subjects(home: Path, agency: str) -> list[str]:
    r = cli(home, "inbox", agency, "--operation", "TRIDENT", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    return [i["subject"] for i in json.loads(r.stdout)]


@pytest.mark.broker
def test_a_removed_member_receives_nothing_more_under_the_operation(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert cli(home, "init", "--preset", "demo", "--port", str(pick_free_port())) \
        .returncode == 0
    with network_up(home, "--hosts", "1"):
        change(home, "create", "TRIDENT", "--lead", "NCB-FR", "--members", "NCB-DE,NCB-US",
               "--until", "1d")
        code, out = publish(home, "@TRIDENT", "before")
        assert code == 0 and isinstance(out, dict), out
        assert out["receipts"] == {"NCB-DE": "delivered", "NCB-US": "delivered"}

        change(home, "remove", "TRIDENT", "NCB-US")
        code, out = publish(home, "@TRIDENT", "after")
        assert code == 0 and isinstance(out, dict), out
        assert out["recipients"] == ["NCB-DE"]
        code, out = publish(home, "NCB-US", "direct")
        assert code == 3, out  # refused: NCB-US no longer holds the caveat
        assert "clearance.recipient" in str(out)

        assert subjects(home, "NCB-US") == ["before"]
        assert subjects(home, "NCB-DE") == ["before", "after"]
        shown = cli(home, "operation", "show", "TRIDENT", "--agency", "NCB-DE", "--json")
        view = json.loads(shown.stdout)
        assert view["removed"] == ["NCB-US"]
        assert [[m["subject"] for m in th] for th in view["threads"]] == [["before"],
                                                                          ["after"]]
        # a closed operation routes nothing more, to anyone
        change(home, "close", "TRIDENT")
        code, out = publish(home, "NCB-DE", "closed")
        assert code == 3 and "operation.closed" in str(out), out
        assert subjects(home, "NCB-DE") == ["before", "after"]
