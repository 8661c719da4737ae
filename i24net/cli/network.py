"""``i24net init`` and ``i24net directory ...``: create a network home and manage its directory."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape
from rich.table import Table

from i24net.cli import cli, console, home_option
from i24net.core import directory as dirmod
from i24net.core.directory import Directory
from i24net.home import Home
from i24net.presets import PRESETS, preset_toml


@cli.command()
@click.option("--preset", type=click.Choice(PRESETS), default="demo", show_default=True,
              help="Built-in network to create.")
@click.option("--spec", "spec_file", type=click.Path(exists=True, dir_okay=False),
              help="Use this network.toml instead of a preset.")
@click.option("--force", is_flag=True, help="Replace an existing network in the home.")
@home_option
def init(preset: str, spec_file: str | None, force: bool, home: str | None) -> None:
    """Create a network home: network.toml, keys (mode 0600) and a signed directory."""
    h = Home.resolve(home)
    text = Path(spec_file).read_text() if spec_file else preset_toml(preset)
    d = h.init(text, force=force)
    console.print(f"created network [bold]{escape(d.network)}[/] in {escape(str(h.path))}")
    console.print(f"  {len(d.agencies)} agencies, directory version {d.serial}, "
                  f"authority key {d.authority_key.hex()[:16]}...")
    console.print(f"  next: i24net directory show --home {escape(str(h.path))}")


@cli.group()
def directory() -> None:
    """Show, verify and change the signed directory (rotate keys, revoke agencies)."""


def directory_json(d: Directory) -> dict[str, object]:
    return {
        "network": d.network,
        "serial": d.serial,
        "issued_ms": d.issued_ms,
        "prefix": d.prefix,
        "levels": list(d.scale.levels),
        "caveats": sorted(d.scale.caveats),
        "authority_key": d.authority_key.hex(),
        "digest": d.digest.hex(),
        "agencies": [
            {
                "id": a.id, "name": a.name, "kind": a.kind, "region": a.region,
                "clearance": a.clearance.marking, "roles": sorted(a.roles),
                "groups": d.groups_of(a.id), "status": a.status,
                "key_version": a.key_version, "key_id": a.key_id.hex(),
                "sign_key": a.sign_key.hex(), "enc_key": a.enc_key.hex(),
            }
            for a in sorted(d.agencies.values(), key=lambda r: r.id)
        ],
        "groups": {g: list(m) for g, m in sorted(d.groups.items())},
    }


@directory.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@home_option
def directory_show(as_json: bool, home: str | None) -> None:
    """List the agencies of the current (verified) directory."""
    d = Home.resolve(home).directory()
    if as_json:
        click.echo(json.dumps(directory_json(d), indent=2))
        return
    # names are free text from network.toml: escaped, so "[...]" is shown, not read as markup
    table = Table(title=f"{escape(d.network)} directory v{d.serial} "
                  f"({len(d.agencies)} agencies)")
    for col in ("agency", "name", "kind", "region", "clearance", "groups", "roles", "status"):
        table.add_column(col)
    for a in sorted(d.agencies.values(), key=lambda r: r.id):
        colour = d.scale.colour(a.clearance.level)
        status = "[green]active[/]" if a.active else "[red]revoked[/]"
        table.add_row(a.id, escape(a.name), a.kind, a.region,
                      f"[{colour}]{a.clearance.marking}[/]",
                      " ".join(g for g in d.groups_of(a.id) if g != "@ALL"),
                      ", ".join(sorted(a.roles)), status)
    console.print(table)


@directory.command("verify")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False))
@home_option
def directory_verify(file: str | None, home: str | None) -> None:
    """Verify the signed directory (or FILE) against the home's trust anchor; exit 3 if bad."""
    h = Home.resolve(home)
    if file:
        held = h.directory()
        d = dirmod.load(Path(file).read_bytes(), h.anchor(), held=held)
    else:
        d = h.directory()
    console.print(f"[green]valid[/]: {escape(d.network)} directory version {d.serial}, "
                  f"{len(d.agencies)} agencies, digest {d.digest.hex()[:16]}")


@directory.command("rotate")
@click.argument("agency")
@home_option
def directory_rotate(agency: str, home: str | None) -> None:
    """Give AGENCY new keys and issue the next directory version."""
    d, _ = Home.resolve(home).rotate(agency)
    console.print(f"rotated keys of {agency} (key version {d.agency(agency).key_version}); "
                  f"directory is now version {d.serial}")


@directory.command("revoke")
@click.argument("agency")
@home_option
def directory_revoke(agency: str, home: str | None) -> None:
    """Revoke AGENCY; takes effect at the new directory version issued now."""
    d = Home.resolve(home).revoke(agency)
    console.print(f"revoked {agency}; directory is now version {d.serial}")


@directory.command("issue")
@home_option
def directory_issue(home: str | None) -> None:
    """Issue a new directory version from the edited network.toml."""
    d = Home.resolve(home).reissue()
    console.print(f"issued directory version {d.serial} ({len(d.agencies)} agencies)")
