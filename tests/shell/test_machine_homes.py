"""A network over two "machines" on one: the authority's home runs the broker, the router and
some agencies; a machine's export (``i24net export``), a separate folder sharing no file,
runs two other agencies in one host process. Messages cross both ways, and the export can
act only as its own agencies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from livekit import cli, demo_home, running_network, spawn, wait_ready

pytestmark = pytest.mark.broker


def test_a_machine_home_runs_its_agencies_against_the_network(tmp_path: Path) -> None:
    home, _ = demo_home(tmp_path)
    machine = tmp_path / "machine-b"
    exported = cli(home, "export", "--machine", "b", "--agencies", "NCB-DE,NCB-US",
                   str(machine))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    with running_network(home, ("GS-LYON", "NCB-FR"), "--engine", "embedded"):
        host: subprocess.Popen[bytes] = spawn(machine, "host-b", "host", "b",
                                              "--agencies", "NCB-DE,NCB-US")
        try:
            wait_ready(machine, "host-b", host, "ready b 2 agencies")
            sent = cli(home, "publish", "--as", "NCB-FR", "--to", "NCB-DE,NCB-US",
                       "--classification", "RESTRICTED", "--subject", "to machine b",
                       "--text", "x", "--wait", "30")
            assert sent.returncode == 0, sent.stdout + sent.stderr
            assert "delivered to 2 recipient(s)" in sent.stdout
            for agency in ("NCB-DE", "NCB-US"):
                box = json.loads(cli(machine, "inbox", agency, "--json").stdout)
                assert [i["subject"] for i in box] == ["to machine b"], agency
            back = cli(machine, "publish", "--as", "NCB-DE", "--to", "NCB-FR",
                       "--classification", "RESTRICTED", "--subject", "from machine b",
                       "--text", "x", "--wait", "30")
            assert back.returncode == 0, back.stdout + back.stderr
            assert "delivered to 1 recipient(s)" in back.stdout
            box = json.loads(cli(home, "inbox", "NCB-FR", "--json").stdout)
            assert [i["subject"] for i in box] == ["from machine b"]
            # machine b holds no other agency's key: it cannot speak for NCB-FR
            forged = cli(machine, "publish", "--as", "NCB-FR", "--to", "NCB-DE",
                         "--classification", "RESTRICTED", "--subject", "forged",
                         "--text", "x", "--wait", "5")
            assert forged.returncode != 0
            assert "does not run on machine b" in forged.stdout + forged.stderr
        finally:
            if host.poll() is None:
                os.killpg(host.pid, signal.SIGTERM)
            host.wait(timeout=15)
    # the two homes share no file: b's stores and logs are its own
    assert (machine / "state" / "node-NCB-DE.sqlite").exists()
    assert not (home / "state" / "node-NCB-DE.sqlite").exists()
