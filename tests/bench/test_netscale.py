"""``i24net bench --network``: the /proc view of a network's processes, the verdicts against
the targets, and one quick case end to end (interpol on the embedded broker)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from i24net.bench import netscale
from i24net.cli import cli
from i24net.cli.bench import network_table

# Busy for about 0.6 s of CPU, holds 64 MiB, then sleeps until killed. The path passed
# after the program is what names it as a process "of" that home.
CHILD = """
import sys, time
block = bytearray(64 << 20)
for i in range(0, len(block), 4096):
    block[i] = 1
t = time.process_time()
while time.process_time() - t < 0.6:
    pass
print("ready", flush=True)
time.sleep(600)
"""

BUSY = """
import time
print("ready", flush=True)
t = time.monotonic()
while time.monotonic() - t < 30:
    pass
"""


def _start(code: str, *args: str) -> subprocess.Popen[str]:
    p = subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE,
                         text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait()


def test_proc_view_sums_cpu_and_rss_of_a_known_child(tmp_path: Path,
                                                     children: list) -> None:
    home = tmp_path / "home"
    child = _start(CHILD, str(home / "broker" / "x.conf"))
    children.append(child)
    # A path that merely starts like the home is another home.
    other = _start(CHILD, str(tmp_path / "home2"))
    children.append(other)

    assert netscale.home_pids(home) == [child.pid]
    assert netscale.home_pids(tmp_path / "home2") == [other.pid]
    assert not netscale.is_i24net(child.pid)
    assert 0.5 <= netscale.cpu_seconds([child.pid]) < 5
    assert 63 <= netscale.rss_mib([child.pid]) < 200
    both = netscale.rss_mib([child.pid, other.pid])
    assert both == pytest.approx(netscale.rss_mib([child.pid])
                                 + netscale.rss_mib([other.pid]), abs=2)
    assert netscale.cpu_seconds([child.pid, 2 ** 22 + 1]) >= 0.5  # a gone pid counts 0
    pct, n = netscale.cpu_percent(lambda: netscale.home_pids(home), 0.5)
    assert n == 1 and 0 <= pct < 20  # it sleeps

    assert netscale.kill_home(home) == 1
    assert child.wait(timeout=10) == -9
    assert other.poll() is None
    assert netscale.home_pids(home) == []


def test_zombies_and_this_process_are_not_counted(tmp_path: Path, children: list) -> None:
    home = tmp_path / "home"
    done = subprocess.Popen([sys.executable, "-c", "pass", str(home)])
    children.append(done)  # not reaped until the fixture's wait: a zombie meanwhile
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        fields = netscale._stat_fields(done.pid)
        if fields is not None and fields[0] == "Z":
            break
        time.sleep(0.02)
    assert netscale.home_pids(home) == []
    # A process whose own command line names the home does not count itself.
    me = subprocess.run([sys.executable, "-c", "import sys; from i24net.bench.netscale import "
                         "home_pids; print(home_pids(sys.argv[1]))", str(home)],
                        capture_output=True, text=True, timeout=60)
    assert me.stdout.strip() == "[]", me.stderr


def test_cpu_percent_of_a_busy_child(tmp_path: Path, children: list) -> None:
    home = tmp_path / "home"
    children.append(_start(BUSY, str(home)))
    pct, n = netscale.cpu_percent(lambda: netscale.home_pids(home), 1.0)
    assert n == 1
    assert 20 < pct <= 110  # about one core; a shared machine may take some


def test_cases_parse() -> None:
    assert netscale.parse_case("interpol-embedded") == ("interpol", "embedded")
    assert netscale.parse_case("1000-mosquitto") == ("1000", "mosquitto")
    for bad in ("interpol", "interpol-nats", "demo-embedded", "1-embedded", "-embedded"):
        with pytest.raises(ValueError):
            netscale.parse_case(bad)
    assert set(netscale.QUICK_CASES) < set(netscale.CASES)


def _case(**figures: object) -> dict:
    c = {"case": "interpol-embedded", "network": "interpol", "engine": "embedded",
         "agencies": 198, "up_s": 4.0, "processes": 4, "i24net_processes": 4,
         "rss_mib": 300.0, "broadcast_s": 0.6, "broadcast_receipts": 197,
         "broadcast_recipients": 197, "broadcast_cli_s": 1.2, "idle_cpu_pct": 1.0,
         "down_s": 1.0, "left_running": 0, "error": None}
    c.update(figures)
    c["verdicts"] = netscale.verdicts(c)
    return c


def test_verdicts_against_the_targets() -> None:
    assert netscale.verdict(3.0, 3.0) == "met"
    assert netscale.verdict(3.01, 3.0) == "MISSED"
    assert netscale.verdict(None, 3.0) == "n/a"
    assert netscale.verdict(1.0, None) == "n/a"

    ok = _case()
    assert set(ok["verdicts"].values()) == {"met"}
    assert set(ok["verdicts"]) == {"up_s", "rss_mib", "broadcast_s", "idle_cpu_pct",
                                   "down_s", "left_running"}
    slow = _case(up_s=15.5, broadcast_s=None, left_running=2)
    assert slow["verdicts"]["up_s"] == "MISSED"
    assert slow["verdicts"]["broadcast_s"] == "n/a"
    assert slow["verdicts"]["left_running"] == "MISSED"
    assert slow["verdicts"]["rss_mib"] == "met"
    # The 1,000-agency targets are looser; a network without targets gets no verdict.
    big = _case(case="1000-embedded", network="1000", up_s=40.0, rss_mib=1500.0,
                broadcast_s=9.0, idle_cpu_pct=12.0, down_s=8.0)
    assert set(big["verdicts"].values()) == {"met"}
    assert _case(network="1000", up_s=61.0)["verdicts"]["up_s"] == "MISSED"
    assert _case(case="50-embedded", network="50")["verdicts"] == {}
    assert netscale.missed({"cases": [ok, slow, big]}) == [
        "interpol-embedded: up_s", "interpol-embedded: left_running"]


def test_table_and_markdown_show_values_targets_and_verdicts() -> None:
    results = {"cpu_model": "CPU", "cores": 2, "loadavg": [0.5, 0.4, 0.3],
               "loadavg_end": [0.6, 0.5, 0.3], "idle_s": 5.0, "seconds": 42.0,
               "cases": [_case(), _case(case="interpol-mosquitto", engine="mosquitto",
                                        broadcast_s=3.5),
                         _case(case="1000-embedded", network="1000", up_s=None,
                               error="i24net up failed (exit 1: no broker)")],
               "skipped": [{"case": "x-mosquitto", "reason": "not installed"}]}
    text, st = netscale.cell(results["cases"][1], netscale.FIGURES[4])
    assert (text, st) == ("3.50 (<= 3)", "MISSED")
    assert netscale.cell(results["cases"][0], netscale.FIGURES[2]) == ("4 (4)", "")
    assert netscale.cell(results["cases"][0], netscale.FIGURES[5])[0] == "197 of 197"
    assert netscale.cell(results["cases"][2], netscale.FIGURES[1]) == ("- (<= 60)", "n/a")

    md = netscale.markdown(results, "i24net bench --network")
    assert "| figure | unit | interpol-embedded | interpol-mosquitto | 1000-embedded |" in md
    assert "3.50 (<= 3) **MISSED**" in md
    assert "0.60 (<= 3) met" in md
    assert "- 1000-embedded failed: i24net up failed (exit 1: no broker)" in md
    assert "- x-mosquitto skipped: not installed" in md
    assert "up <= 60 s, RSS <= 2048 MiB, @ALL <= 15 s, idle <= 15 %" in md
    assert "up <= 15 s, RSS <= 1024 MiB, @ALL <= 3 s, idle <= 5 %" in md

    up = netscale.FIGURES[1]
    assert netscale.target_cell(["interpol", "1000"], up) == "<= 15 / <= 60"
    assert netscale.target_cell(["50"], up) == ""
    assert netscale.cell(results["cases"][1], up, target=False) == ("4.0", "met")

    con = Console(record=True, width=80)
    con.print(network_table(results))
    out = con.export_text()
    assert "mosquitto" in out and "interpol / 1000" in out and "<= 15 / <= 60" in out
    assert "3.50 MISSED" in out and "0.60 met" in out


def test_mosquitto_cases_are_skipped_without_the_binary(monkeypatch: pytest.MonkeyPatch
                                                       ) -> None:
    from i24net.broker import mosquitto
    from i24net.broker.errors import BrokerNotInstalledError

    def missing(executable: str | None = None) -> str:
        raise BrokerNotInstalledError("mosquitto not found")

    monkeypatch.setattr(mosquitto, "find_mosquitto", missing)
    said: list[str] = []
    results = netscale.run(["interpol-mosquitto"], idle_s=1, say=said.append)
    assert results["cases"] == []
    assert results["skipped"] == [{"case": "interpol-mosquitto", "reason": netscale.skip_reason(
        "interpol-mosquitto")}]
    assert "not installed" in said[0]
    assert netscale.skip_reason("interpol-embedded") is None


def test_cli_refuses_mixed_options() -> None:
    runner = CliRunner()
    for args in (["--network", "--scale"], ["--network", "--engine", "mosquitto"],
                 ["--network", "--cases", "interpol-nats"], ["--cases", "interpol-embedded"],
                 ["--network", "--cases", " , "]):
        r = runner.invoke(cli, ["bench", *args])
        assert r.exit_code == 2, (args, r.output)


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_quick_interpol_embedded_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "net.json"
    done = subprocess.run([sys.executable, "-m", "i24net", "bench", "--network", "--quick",
                           "--cases", "interpol-embedded", "--json", str(out)],
                          capture_output=True, text=True, timeout=280)
    assert done.returncode == 0, done.stdout + done.stderr
    results = json.loads(out.read_text())
    assert {"cpu_model", "cores", "loadavg", "loadavg_end", "idle_s", "targets", "cases",
            "skipped", "quick"} <= set(results)
    assert results["quick"] is True and results["idle_s"] == 5
    (case,) = results["cases"]
    keys = {"up_s", "processes", "i24net_processes", "rss_mib", "broadcast_s",
            "broadcast_receipts", "broadcast_cli_s", "idle_cpu_pct", "down_s",
            "left_running", "agencies", "engine", "verdicts", "error"}
    assert keys <= set(case), keys - set(case)
    assert case["error"] is None
    assert case["agencies"] == 198 and case["engine"] == "embedded"
    assert case["broadcast_receipts"] == 197
    assert case["left_running"] == 0
    assert case["processes"] >= case["i24net_processes"] >= 3
    for key in ("up_s", "rss_mib", "broadcast_s", "broadcast_cli_s", "idle_cpu_pct",
                "down_s"):
        assert isinstance(case[key], int | float) and case[key] >= 0, key
    assert set(case["verdicts"].values()) <= {"met", "MISSED"}
    assert out.with_suffix(".md").read_text().startswith("Measured with")
