"""End to end on a real broker: the daemons as separate processes, driven through the CLI.

Everything listens on 127.0.0.1 on a free port. Runs once on the embedded amqtt broker and
once on Mosquitto (skipped if it is not installed).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from livekit import cli, demo_home, running_network

pytestmark = pytest.mark.broker

AGENCIES = ("GS-LYON", "NCB-FR", "NCB-DE", "EUROPOL", "NCB-US", "NCB-ZA")


@pytest.fixture(params=["embedded", "mosquitto"])
def network(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    engine = request.param
    home, _ = demo_home(tmp_path, engine)
    with running_network(home, AGENCIES, "--engine", engine):
        yield home


def test_diffusion_end_to_end_and_clearance_refusal(network: Path) -> None:
    home = network
    sent = cli(home, "publish", "--as", "NCB-DE", "--to", "@EU", "--kind", "diffusion",
               "--classification", "CONFIDENTIAL", "--caveat", "EU", "--handling", "H2",
               "--subject", "Wanted: J. Doe", "--text", "seen in Lyon", "--wait", "30")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert "accepted" in sent.stdout and "delivered to 3 recipient(s)" in sent.stdout
    for agency in ("NCB-FR", "EUROPOL", "GS-LYON"):
        box = json.loads(cli(home, "inbox", agency, "--json").stdout)
        assert [i["subject"] for i in box] == ["Wanted: J. Doe"], agency
        assert box[0]["kind"] == "diffusion" and box[0]["label"] == "CONFIDENTIAL//EU"
    refused = cli(home, "publish", "--as", "NCB-US", "--to", "NCB-ZA",
                  "--classification", "CONFIDENTIAL", "--subject", "not for ZA",
                  "--text", "x", "--wait", "30")
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "clearance.recipient" in refused.stdout and "NCB-ZA" in refused.stdout
    time.sleep(1.0)
    assert json.loads(cli(home, "inbox", "NCB-ZA", "--json").stdout) == []
    # Onward dissemination of the H2 diffusion without the source's release is refused.
    diffusion = json.loads(cli(home, "inbox", "NCB-FR", "--json").stdout)[0]
    forward = cli(home, "publish", "--as", "NCB-FR", "--to", "NCB-US", "--ref",
                  diffusion["id"], "--classification", "CONFIDENTIAL", "--caveat", "EU",
                  "--handling", "H2", "--subject", "fwd", "--text", "x", "--wait", "30")
    assert forward.returncode == 3
    # NCB-US is not cleared for EU; the clearance check comes before the forward rule.
    assert "refused" in forward.stdout


def test_prekey_rotation_reaches_running_nodes(tmp_path: Path) -> None:
    """A prekey rotation published to a running network: each node loads its new prekey
    when the directory arrives, so a message sealed to the new prekey is read at once."""
    home, _ = demo_home(tmp_path)
    with running_network(home, AGENCIES, "--engine", "embedded"):
        rotated = cli(home, "directory", "rotate-prekeys")
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        assert "published version 2" in rotated.stdout, rotated.stdout
        time.sleep(2.0)  # the retained directory reaches every node
        sent = cli(home, "publish", "--as", "NCB-FR", "--to", "NCB-DE", "--classification",
                   "RESTRICTED", "--subject", "after the rotation", "--text", "x",
                   "--wait", "30")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert "delivered to 1 recipient(s)" in sent.stdout
        box = json.loads(cli(home, "inbox", "NCB-DE", "--json").stdout)
        assert [i["subject"] for i in box] == ["after the rotation"]
        log = (home / "logs").glob("*.log")
        assert any("keys loaded again" in p.read_text(errors="replace") for p in log)
