"""``i24net demo``: a guided tour of a network, from keys to a refused forgery."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click

from i24net.cli import cli, console
from i24net.core import envelope as env
from i24net.core.errors import I24Error
from i24net.core.labels import HandlingCodes, Label, Precedence
from i24net.home import Home, now_ms
from i24net.presets import preset_toml


def _step(ok: bool, text: str) -> bool:
    mark = "[green]ok[/]  " if ok else "[red]FAIL[/]"
    console.print(f"{mark} {text}")
    return ok


def run_envelope_tour(home: Home) -> bool:
    """Seal one diffusion and show who can and cannot open it; True if all went as expected."""
    d = home.init(preset_toml("demo"), force=True)
    console.print(f"network [bold]{d.network}[/] in {home.path}: {len(d.agencies)} agencies, "
                  f"directory v{d.serial} signed by the GS authority")
    header = env.make_header(
        d, sender="NCB-FR", addressing=["@EU"], kind="diffusion",
        label=Label("CONFIDENTIAL", frozenset({"EU"})), now_ms=now_ms(), ttl_ms=3600_000,
        random_bytes=os.urandom, precedence=Precedence.IMMEDIATE,
        handling=HandlingCodes.parse(["H2"]))
    raw = env.seal(header, env.Body("Wanted: J. Doe", "Suspect seen at Gare de Lyon."),
                   home.keys("NCB-FR"), env.recipient_keys(d, header),
                   random_bytes=os.urandom)
    ok = _step(True, f"NCB-FR sealed diffusion {header.id_hex[:12]} to @EU = "
               f"{', '.join(header.recipients)} at {header.label.marking}, H2 ({len(raw)} B)")
    opened = env.open_envelope(raw, home.keys("NCB-DE"), d)
    ok &= _step(opened.body.subject == "Wanted: J. Doe",
                f"NCB-DE verified and decrypted it: {opened.body.subject!r}")
    try:
        env.open_envelope(raw, home.keys("NCB-US"), d)
        ok &= _step(False, "NCB-US opened a message not addressed to it")
    except I24Error as exc:
        ok &= _step(True, f"NCB-US cannot open it: {exc.reason}")
    tampered = bytearray(raw)
    tampered[len(raw) // 2] ^= 0x01
    try:
        env.open_envelope(bytes(tampered), home.keys("NCB-DE"), d)
        ok &= _step(False, "a tampered envelope was accepted")
    except I24Error as exc:
        ok &= _step(True, f"one flipped bit is refused: {exc.reason}")
    d2 = home.revoke("NCB-FR")
    try:
        env.open_envelope(raw, home.keys("NCB-DE"), d2)
        ok &= _step(False, "a revoked sender was accepted")
    except I24Error as exc:
        ok &= _step(True, f"after revoking NCB-FR (directory v{d2.serial}): {exc.reason}")
    return ok


@cli.command()
@click.option("--home", "home", default=None, metavar="DIR",
              help="Network home to use (default: a temporary folder, removed after).")
def demo(home: str | None) -> None:
    """Create a demo network and walk through sealing, opening and refusals."""
    if home:
        ok = run_envelope_tour(Home(home))
    else:
        with tempfile.TemporaryDirectory(prefix="i24net-demo-") as tmp:
            ok = run_envelope_tour(Home(Path(tmp) / "home"))
    if not ok:
        raise click.ClickException("the demo did not behave as expected (see FAIL above)")
    console.print("[bold green]demo complete[/]")
