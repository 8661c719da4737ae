"""What every ``i24net`` command has in common, through click's CliRunner on a demo home:
exit codes from one table, unknown names answered with the closest ones, a stopped
sender's node refused before anything is queued, output that survives a pipe, ``-`` for
stdin and stdout, and one meaning of ``--json``.

"Running" is tested against a stand-in for a node host: a thread answering on the host's
control socket as ``i24net.shell.host`` does, so no daemon is started here.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import psutil
import pytest
from click.testing import CliRunner, Result

from i24net.cli import EXIT_CODES, cli, closest
from i24net.config.home import Home, now_ms
from i24net.core.node import InboxItem
from i24net.shell.control import ctl_dir, ctl_path, socket_address
from i24net.shell.runtime import node_store_path
from i24net.store import SqliteNodeStore

Run = Callable[..., Result]  # the ``run`` fixture (tests/cli/conftest.py)
ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
MESSAGE = ("--classification", "CONFIDENTIAL", "--subject", "Wanted: J. Doe", "--text", "x")


@pytest.fixture(autouse=True)
def _no_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)


def publish(run: Run, home: Path, *extra: str, sender: str = "NCB-DE",
            to: str = "NCB-FR") -> Result:
    return run("publish", "--home", home, "--as", sender, "--to", to, *MESSAGE, *extra)


def outbox(home: Path, agency: str = "NCB-DE") -> list[str]:
    path = node_store_path(Home(home), agency)
    if not path.exists():
        return []
    with SqliteNodeStore(path, readonly=True) as store:
        return [e.msg_id.hex() for e in store.outbox_list(limit=None)]


def one_error(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ERROR:"), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


# -- exit codes -----------------------------------------------------------------------------


def test_the_exit_code_table_is_the_same_in_help_and_readme(run: Run) -> None:
    help_text = run("--help").stdout
    assert "Exit codes:" in help_text
    for code, meaning in EXIT_CODES:
        assert re.search(rf"^\s+{re.escape(code)}\s+{re.escape(meaning)}$", help_text,
                         re.M), (code, meaning)
        assert f"| {code} | {meaning} |" in README, (code, meaning)
    codes = [c for c, _ in EXIT_CODES]
    assert codes == ["0", "1", "2", "3", "4", "5", "6", "7", "128+N"]


def test_commands_take_their_exit_codes_from_one_module() -> None:
    literal = re.compile(r"(SystemExit|Exit|ctx\.exit)\((?!128 \+ )\d")
    own = re.compile(r"^EXIT_\w+ *=", re.M)
    for path in sorted((ROOT / "i24net" / "cli").glob("*.py")):
        text = path.read_text()
        assert not literal.search(text), f"{path.name}: a literal exit code"
        if path.name != "__init__.py":
            assert not own.search(text), f"{path.name}: defines its own EXIT_ constant"


# -- unknown names --------------------------------------------------------------------------


def test_closest_names() -> None:
    agencies = ["EUROPOL", "GS-LYON", "NCB-DE", "NCB-FR", "NCB-US", "NCB-ZA"]
    assert closest("NCB-FX", agencies) == ["NCB-FR"]
    assert closest("ncb-fr", agencies) == ["NCB-FR"]
    assert closest("fr", agencies) == ["NCB-FR"]
    assert closest("GS-LYN", agencies) == ["GS-LYON"]
    assert closest("NCB-QQ", agencies) == []
    groups = ["@ALL", "@NCB", "@EUROPE", "@EU", "@AFRICA"]
    assert closest("@EUR", groups) == ["@EU", "@EUROPE"]


@pytest.mark.parametrize(("args", "needle"), [
    (("--to", "NCB-FX"), "unknown agency NCB-FX (--to); did you mean NCB-FR?"),
    (("--to", "NCB-FR,ncb-us"), "unknown agency ncb-us (--to); did you mean NCB-US?"),
    (("--as", "NCB-DX"), "unknown agency NCB-DX (--as); did you mean NCB-DE?"),
    (("--to", "@EUR"), "unknown group @EUR (--to); did you mean @EU or @EUROPE?"),
    (("--to", "NCB-QQ"), "unknown agency NCB-QQ (--to) ('i24net directory show' lists them)"),
])
def test_an_unknown_name_exits_6_naming_the_closest(run: Run, home: Path,
                                                    args: tuple[str, ...],
                                                    needle: str) -> None:
    kw = dict(zip(args[::2], args[1::2], strict=True))
    result = publish(run, home, "--queue", sender=kw.get("--as", "NCB-DE"),
                     to=kw.get("--to", "NCB-FR"))
    assert result.exit_code == 6, result.output
    assert needle in one_error(result)
    assert outbox(home) == []  # nothing queued


@pytest.mark.parametrize("args", [
    ("inbox", "NCB-FX"), ("outbox", "NCB-FX"), ("stop", "NCB-FX"), ("start", "NCB-FX"),
    ("notice", "list", "--as", "NCB-FX"), ("directory", "rotate", "NCB-FX"),
    ("notice", "review", "--as", "NCB-FX", "ab", "--approve"),
])
def test_every_command_naming_an_agency_says_the_same(run: Run, home: Path,
                                                      args: tuple[str, ...]) -> None:
    result = run(*args, "--home", home)
    assert result.exit_code == 6, result.output
    line = one_error(result)
    assert "unknown agency NCB-FX" in line and "did you mean NCB-FR?" in line


def test_a_sealed_envelope_to_an_unknown_agency_is_not_written(run: Run, home: Path,
                                                              tmp_path: Path) -> None:
    out = tmp_path / "m.i24"
    result = run("envelope", "seal", "--home", home, "--as", "NCB-DE", "--to", "NCB-FX",
                 *MESSAGE, "-o", out)
    assert result.exit_code == 6 and "did you mean NCB-FR?" in one_error(result)
    assert not out.exists()


# -- the sender's node must run -------------------------------------------------------------


class FakeHost:
    """Answers on ``host-1``'s control socket as a node host does: ``wake`` gets the
    agency's state; recorded in state/processes.json as this (live) process. ``silent``:
    takes each connection and never answers, as a loaded or frozen process."""

    def __init__(self, home: Path, state: str, agencies: tuple[str, ...] = ("NCB-DE",),
                 silent: bool = False):
        self.state, self.silent = state, silent
        self.requests: list[dict[str, object]] = []
        h = Home(home)
        ctl_dir(h).mkdir(parents=True, exist_ok=True)
        # the command line as the supervisor reads it (a test worker may have retitled
        # this process, e.g. pytest-xdist through setproctitle)
        own = psutil.Process().cmdline()
        (h.state_dir / "processes.json").write_text(json.dumps({"host-1": {
            "pid": os.getpid(), "argv": own, "log": "", "started": 0.0,
            "agencies": list(agencies)}}))
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with socket_address(ctl_path(h, "host-1")) as address:
            self.sock.bind(address)
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                req = json.loads(conn.makefile("rb").readline())
                self.requests.append(req)
                if self.silent:
                    self.stop.wait()
                    continue
                conn.sendall(json.dumps({"ok": True, "state": self.state}).encode() + b"\n")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


@pytest.fixture
def fake_host(home: Path) -> Iterator[Callable[[str], FakeHost]]:
    made: list[FakeHost] = []

    def make(state: str, silent: bool = False) -> FakeHost:
        made.append(FakeHost(home, state, silent=silent))
        return made[-1]

    yield make
    for f in made:
        f.close()


def test_publish_with_the_network_down_exits_7_and_queues_nothing(run: Run,
                                                                  home: Path) -> None:
    result = publish(run, home)
    assert result.exit_code == 7, result.output
    line = one_error(result)
    assert f"node NCB-DE is not running; start it with `i24net up --home {home}`" in line
    assert "--queue" in line and "(node.not-running)" in line
    assert result.stdout == "" and outbox(home) == []


def test_publish_to_a_stopped_agency_in_a_running_host_says_start(
        run: Run, home: Path, fake_host: Callable[[str], FakeHost]) -> None:
    host = fake_host("stopped")
    result = publish(run, home)
    assert result.exit_code == 7, result.output
    line = one_error(result)
    assert "node NCB-DE is not running (stopped); start it with `i24net start NCB-DE" in line
    assert outbox(home) == []
    assert [r["op"] for r in host.requests] == ["wake"]  # asked, not changed


def test_publish_through_a_running_node_wakes_it(run: Run, home: Path,
                                                 fake_host: Callable[[str], FakeHost]) -> None:
    host = fake_host("up")
    result = publish(run, home, "-q")
    assert result.exit_code == 0, result.output
    msg_id = result.stdout.strip()
    assert re.fullmatch(r"[0-9a-f]{32}", msg_id) and result.stdout == msg_id + "\n"
    assert outbox(home) == [msg_id]
    assert [r["op"] for r in host.requests] == ["wake", "wake"]  # the probe, then the send


def test_a_node_too_busy_to_answer_counts_as_running(
        home: Path, fake_host: Callable[..., FakeHost]) -> None:
    """A process took the connection: it is there (loaded, or frozen by a drill) and sends
    the message when it gets to it; only a socket nobody listens on means not running."""
    from i24net.cli import require_running
    from i24net.ops.client import node_state

    h = Home(home)
    assert node_state(h, "NCB-DE", timeout=0.3) == ("down", "control.unreachable")
    fake_host("up", silent=True)
    assert node_state(h, "NCB-DE", timeout=0.3) == ("busy", "control.timeout")
    assert require_running(h, "NCB-DE", timeout=0.3) == "busy"


def test_queue_keeps_the_old_behaviour_and_json_says_so(run: Run, home: Path) -> None:
    result = publish(run, home, "--queue", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["state"] == "queued" and doc["node_running"] is False
    assert (doc["sender"], doc["recipients"], doc["label"]) == ("NCB-DE", ["NCB-FR"],
                                                                "CONFIDENTIAL")
    assert outbox(home) == [doc["id"]]
    listed = json.loads(run("outbox", "NCB-DE", "--json", "--home", home).stdout)
    assert [(e["id"], e["state"], e["to"]) for e in listed] == [(doc["id"], "queued",
                                                                 ["NCB-FR"])]


def test_quiet_and_json_together_is_a_usage_error(run: Run, home: Path) -> None:
    assert publish(run, home, "--queue", "-q", "--json").exit_code == 2


def test_a_notice_request_needs_the_requesters_node(run: Run, home: Path) -> None:
    result = run("notice", "request", "--home", home, "--as", "NCB-FR", "--colour", "RED",
                 "--subject", "J. Doe", "--offence", "homicide", "--warrant", "W-1")
    assert result.exit_code == 7 and "node NCB-FR is not running" in one_error(result)
    assert outbox(home, "NCB-FR") == []


# -- output that survives a pipe ------------------------------------------------------------


def _inbox_with(home: Path, subject: str) -> bytes:
    msg_id = bytes(range(16))
    with SqliteNodeStore(node_store_path(Home(home), "NCB-FR")) as store:
        store.inbox_put(InboxItem(msg_id, "NCB-DE", "diffusion", "CONFIDENTIAL//EU", 3,
                                  subject, "t", {}, now_ms() - 10, now_ms()))
    return msg_id


def test_piped_tables_are_not_cut_at_80_columns(run: Run, home: Path) -> None:
    subject = "RED NOTICE A-123/12-2026: a subject long enough to be cut at eighty columns"
    msg_id = _inbox_with(home, subject)
    result = run("inbox", "NCB-FR", "--home", home)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if msg_id.hex() in line)
    assert subject in row and "…" not in result.stdout  # whole id, whole subject, one line
    assert len(row) > 80
    shown = run("directory", "show", "--home", home).stdout
    assert "INTERPOL General Secretariat" in shown and "…" not in shown


def test_columns_still_sets_the_width(run: Run, home: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    _inbox_with(home, "x" * 100)
    monkeypatch.setenv("COLUMNS", "70")
    result = run("inbox", "NCB-FR", "--home", home)
    assert result.exit_code == 0
    assert max(len(line) for line in result.stdout.splitlines()) <= 70


# -- "-" is stdin or stdout -----------------------------------------------------------------


def test_seal_to_stdout_and_open_from_stdin(home: Path) -> None:
    runner = CliRunner()
    sealed = runner.invoke(cli, ["envelope", "seal", "--home", str(home), "--as", "NCB-DE",
                                 "--to", "NCB-FR", *MESSAGE, "-o", "-"])
    assert sealed.exit_code == 0, sealed.output
    raw = sealed.stdout_bytes
    assert raw and "-> stdout" in sealed.stderr
    opened = runner.invoke(cli, ["envelope", "open", "--home", str(home), "--as", "NCB-FR",
                                 "-"], input=raw)
    assert opened.exit_code == 0, opened.output
    assert opened.stdout.splitlines()[0] == "Wanted: J. Doe"
    inspected = runner.invoke(cli, ["envelope", "inspect", "--home", str(home), "--json",
                                    "-"], input=raw)
    assert json.loads(inspected.stdout)["signature_valid"] is True
    checked = runner.invoke(cli, ["envelope", "check", "--home", str(home), "-"], input=raw)
    assert checked.exit_code == 0 and "accepted" in checked.stdout


def test_body_file_from_stdin(home: Path) -> None:
    result = CliRunner().invoke(cli, [
        "publish", "--home", str(home), "--queue", "--as", "NCB-DE", "--to", "NCB-FR",
        "--classification", "CONFIDENTIAL", "--subject", "s", "--body-file", "-", "--json"],
        input="café — from stdin\n".encode())
    assert result.exit_code == 0, result.output
    msg_id = bytes.fromhex(json.loads(result.stdout)["id"])
    from i24net.core import envelope as env

    with SqliteNodeStore(node_store_path(Home(home), "NCB-DE"), readonly=True) as store:
        raw = store.outbox_get(msg_id).raw
    opened = env.open_envelope(raw, Home(home).keys("NCB-FR"), Home(home).directory())
    assert opened.body.text == "café — from stdin\n"


def test_audit_show_and_verify_read_stdin(tmp_path: Path) -> None:
    from test_cli_audit import make_log

    path, _, chain = make_log(tmp_path, 5)
    runner = CliRunner()
    shown = runner.invoke(cli, ["audit", "show", "--json", "-"], input=path.read_bytes())
    assert shown.exit_code == 0, shown.output
    assert [json.loads(line)["index"] for line in shown.stdout.splitlines()] == [0, 1, 2, 3, 4]
    verified = runner.invoke(cli, ["audit", "verify", "-"], input=path.read_bytes())
    assert verified.exit_code == 0 and chain.head.hex()[:16] in verified.stdout


# -- one meaning of --json ------------------------------------------------------------------


@pytest.fixture
def drill(tmp_path: Path) -> Path:
    from exercise.support import MINIMAL

    path = tmp_path / "minimal.toml"
    path.write_text(MINIMAL)
    return path


def test_exercise_json_alone_is_json_on_stdout(drill: Path) -> None:
    result = CliRunner().invoke(cli, ["exercise", "run", str(drill), "--virtual", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # nothing but the report on stdout
    assert doc["passed"] is True and doc["exercise"]["name"] == "minimal"
    assert "expectations" in result.stderr  # the human report went to stderr


@pytest.mark.parametrize("form", ["--json", "--json-out"])
def test_exercise_json_file_forms(drill: Path, tmp_path: Path, form: str) -> None:
    out = tmp_path / "aar.json"
    result = CliRunner().invoke(cli, ["exercise", "run", str(drill), "--virtual", form,
                                      str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["passed"] is True
    assert "expectations" in result.stdout  # the report for people stays on stdout


@pytest.mark.parametrize("command", [("bench",), ("chaos",), ("demo",),
                                     ("exercise", "run", "f.toml")])
def test_json_and_json_out_together_is_a_usage_error(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "--json", "--json-out", "x.json"])
    assert result.exit_code == 2 and "not both" in result.output


def _commands(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    """Every command, as a user's shell sees them (the top-level ones load on demand)."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", cmd


def test_listings_take_json_and_report_writers_take_json_out() -> None:
    opts = {name: {o for p in cmd.params for o in p.opts} for name, cmd in _commands(cli)}
    for listing in ("inbox", "outbox", "status", "directory show", "audit show",
                    "notice list", "diffusion list", "envelope inspect", "envelope open",
                    "envelope check", "check", "publish"):
        assert "--json" in opts[listing], listing
    for writer in ("bench", "chaos", "demo", "exercise run"):
        assert {"--json", "--json-out"} <= opts[writer], writer


# -- --home, and the help users read --------------------------------------------------------


def test_readme_says_which_commands_take_home() -> None:
    without = sorted(name for name, cmd in _commands(cli)
                     if "--home" not in {o for p in cmd.params for o in p.opts})
    assert without == ["audit show", "bench", "check", "exercise run", "exercise validate"]
    assert "Every command takes `--home`" not in README
    paragraph = README[README.index("**`--home DIR`**"):][:900]
    for name in without:
        assert f"`{name}`" in paragraph, name


def test_help_speaks_of_the_project() -> None:
    runner = CliRunner()
    bench = runner.invoke(cli, ["bench", "--help"]).stdout
    assert not re.search(r"#\d+|\bissue\b|\bticket\b", bench, re.I)
    assert "i24net" in bench
    notice = runner.invoke(cli, ["notice", "--help"]).stdout
    assert "I24NET_MANUAL_REVIEW=1" in notice
    assert "I24NET_MANUAL_REVIEW" in README
    assert "members members" not in runner.invoke(cli, ["broker", "--help"]).stdout


def test_readme_names_one_default_broker() -> None:
    assert "single-machine default" not in README
    assert re.search(r"embedded[^.]*\(the default", README)
