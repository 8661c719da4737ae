"""``i24net init`` and ``i24net directory ...``: create a network home and manage its directory."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from i24net.cli import check_agencies, check_agency, cli, console, err_console, home_option
from i24net.config.home import Home, now_ms
from i24net.config.presets import PRESETS, preset_toml
from i24net.core import directory as dirmod
from i24net.core.cooperation import Agreement, Operation
from i24net.core.directory import Directory
from i24net.core.errors import I24Error


@cli.command()
@click.option("--preset", type=click.Choice(PRESETS), default="demo", show_default=True,
              help="Built-in network to create.")
@click.option("--spec", "spec_file", type=click.Path(exists=True, dir_okay=False),
              help="Use this network.toml instead of a preset.")
@click.option("--agencies", "n_agencies", type=click.IntRange(2, 20_000), default=None,
              metavar="N", help="Instead of a preset: a synthetic network of N agencies "
              "(seeded, so the same N gives the same network), e.g. 1000.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="With --agencies: the synthetic network's seed.")
@click.option("--force", is_flag=True, help="Replace an existing network in the home.")
@click.option("--engine", type=click.Choice(["embedded", "mosquitto", "nats"]), default=None,
              help="Set [broker] engine (nats: a local 3-member cluster; see brokers/).")
@click.option("--port", type=click.IntRange(1, 65_000), default=None,
              help="Set [broker] port (for nats, member 1's MQTT port).")
@click.option("--routers", type=click.IntRange(1, 64), default=None,
              help="Set [router] shards: routers sharing the load by sender.")
@home_option
def init(preset: str, n_agencies: int | None, seed: int, spec_file: str | None, force: bool,
         engine: str | None, port: int | None, routers: int | None, home: str | None) -> None:
    """Create a network home: network.toml, keys (mode 0600) and a signed directory."""
    from i24net.config.presets import configure, synthetic_toml

    h = Home.resolve(home)
    if n_agencies is not None and spec_file:
        raise click.UsageError("give --agencies or --spec, not both")
    if n_agencies is not None:
        text = synthetic_toml(n_agencies, seed=seed)
    else:
        text = Path(spec_file).read_text() if spec_file else preset_toml(preset)
    text = configure(text, engine=engine, port=port, routers=routers)
    if force and h.spec_file.exists():
        from i24net.ops.supervisor import Supervisor

        running = Supervisor(h).running()
        if running:
            raise click.ClickException(
                f"the network at {h.path} is running ({', '.join(sorted(running)[:5])}"
                f"{', ...' if len(running) > 5 else ''}): run 'i24net down' first, then "
                "init --force replaces it (its keys, stores and logs)")
    d = h.init(text, force=force)
    console.print(f"created network [bold]{escape(d.network)}[/] in {escape(str(h.path))}")
    console.print(f"  {len(d.agencies)} agencies, directory version {d.serial}, "
                  f"authority key {d.authority_key.hex()[:16]}...")
    console.print(f"  next: i24net directory show --home {escape(str(h.path))}")


@cli.command("export")
@click.option("--machine", "machine", required=True, metavar="NAME",
              help="The machine's name (letters, digits, '-', '_'), recorded in its home.")
@click.option("--agencies", "agency_list", default="", metavar="A,B,...",
              help="The agencies whose nodes run on the machine: their keys and broker "
              "passwords are exported, nobody else's.")
@click.option("--routers", "router_list", default="", metavar="k,...|all",
              help="The router shards the machine runs: their signing keys and the router "
              "account's password are exported.")
@click.option("--members", "member_list", default="", metavar="k,...",
              help="The NATS cluster members the machine runs: the members' route secret, "
              "the cluster's TLS certificate and key, and a bcrypt hash of every account's "
              "password (no password) are exported.")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@home_option
def export_(machine: str, agency_list: str, router_list: str, member_list: str, out: Path,
            home: str | None) -> None:
    """Write OUT, the home of one machine of a network spread over several.

    OUT holds what every machine needs (network.toml, the signed directory, the trust anchor,
    the broker's CA certificate) and the secrets of that machine's agencies and router
    shards only: no other agency's key or password and never the directory authority's key,
    so the machine can run its agencies and nothing else, and cannot issue a directory. Copy
    OUT to the machine and run 'i24net up --home OUT' there: it starts that machine's
    agencies and router shards, and no broker. This home records the export (machines/) and
    from then on runs only what no machine took. See docs/scale-out.md.
    """
    from i24net.config.machine import export_machine

    h = Home.resolve(home)
    d = h.directory()
    agencies = check_agencies(d, [a.strip() for a in agency_list.split(",") if a.strip()],
                              "--agencies")
    count = h.spec().router_shards
    words = [w.strip() for w in router_list.split(",") if w.strip()]
    if words == ["all"]:
        shards = list(range(1, count + 1))
    else:
        try:
            shards = [int(w) for w in words]
        except ValueError:
            raise click.BadParameter(f"{router_list!r}: give shard numbers 1..{count}, "
                                     "comma-separated, or 'all'",
                                     param_hint="--routers") from None
    try:
        members = [int(w) for w in member_list.split(",") if w.strip()]
    except ValueError:
        raise click.BadParameter(f"{member_list!r}: give member numbers, comma-separated",
                                 param_hint="--members") from None
    if members and h.spec().broker.tls:
        from i24net.shell.runtime import broker_tls_files

        broker_tls_files(h)  # the members' certificate, made now if the broker never ran
    m = export_machine(h, out, machine, agencies, shards, members)
    if m.broker_members:
        from i24net.shell.runtime import export_member_files

        export_member_files(h, Home(out))
    console.print(f"exported machine [bold]{escape(m.name)}[/] to {escape(str(out))}")
    console.print(f"  agencies: {escape(', '.join(m.agencies)) or 'none'}")
    console.print(f"  router shards: {', '.join(map(str, m.router_shards)) or 'none'}"
                  f" of {count}")
    if m.broker_members:
        console.print(f"  broker members: {', '.join(map(str, m.broker_members))} (with "
                      "the password hashes, not the passwords)")
    console.print(f"  directory version {m.directory_serial}; no directory authority key, no "
                  "other agency's key or password")
    console.print(f"  next: copy it to {escape(m.name)} (it holds private keys: keep the "
                  f"modes) and run 'i24net up --home {escape(str(out))}' there")


@cli.group()
def directory() -> None:
    """Show, verify and change the signed directory (rotate keys, revoke agencies)."""


def operation_json(op: Operation, now: int) -> dict[str, Any]:
    return {"name": op.name, "title": op.title, "lead": op.lead, "members": list(op.members),
            "removed": list(op.removed), "level": op.level, "until_ms": op.until_ms,
            "state": op.state(now), "created_ms": op.created_ms,
            "closed_ms": op.closed_ms or None}


def agreement_json(a: Agreement, now: int) -> dict[str, Any]:
    return {"id": a.id, "title": a.title, "parties": list(a.parties),
            "until_ms": a.until_ms, "state": "active" if a.active(now) else "expired",
            "flows": [{"from": f.source, "to": f.target, "kinds": sorted(f.kinds),
                       "max_level": f.max_level, "caveats": sorted(f.caveats),
                       "handling": sorted(f.handling)} for f in a.flows]}


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
                "id": a.id, "name": a.name, "kind": a.kind, "org": a.org, "region": a.region,
                "clearance": a.clearance.marking, "roles": sorted(a.roles),
                "groups": d.groups_of(a.id), "status": a.status,
                "key_version": a.key_version, "key_id": a.key_id.hex(),
                "sign_key": a.sign_key.hex(), "enc_key": a.enc_key.hex(),
            }
            for a in sorted(d.agencies.values(), key=lambda r: r.id)
        ],
        "groups": {g: list(m) for g, m in sorted(d.groups.items())},
        "agreements": [agreement_json(d.agreements[a], now_ms()) for a in sorted(d.agreements)],
        "operations": [operation_json(d.operations[o], now_ms()) for o in sorted(d.operations)],
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
    for col in ("agency", "name", "kind", "org", "region", "clearance", "groups", "roles",
                "status"):
        table.add_column(col)
    for a in sorted(d.agencies.values(), key=lambda r: r.id):
        colour = d.scale.colour(a.clearance.level)
        status = "[green]active[/]" if a.active else "[red]revoked[/]"
        table.add_row(a.id, escape(a.name), a.kind, a.org, a.region,
                      f"[{colour}]{a.clearance.marking}[/]",
                      " ".join(g for g in d.groups_of(a.id) if g != "@ALL"),
                      ", ".join(sorted(a.roles)), status)
    console.print(table)
    if d.agreements or d.operations:
        console.print(f"{len(d.agreements)} agreement(s) between organisations, "
                      f"{len(d.operations)} joint operation(s): 'i24net agreement list', "
                      "'i24net operation list'")


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


PUBLISH_TIMEOUT_S = 3.0


def _quiet_logger() -> logging.Logger:
    """Connection errors are summed up in one line; the transport's own log stays out."""
    log = logging.getLogger("i24net.cli.directory-publish")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
        log.propagate = False
    return log


def publish_version(h: Home, d: Directory) -> None:
    """Best effort: hand the new version to a running network, if a broker is running."""
    from i24net.shell.runtime import endpoint_file, publish_directory

    if not endpoint_file(h).exists():
        console.print("  no broker is running here: the router and the nodes load this "
                      "version when they start")
        return
    try:
        ep = asyncio.run(publish_directory(h, timeout=PUBLISH_TIMEOUT_S,
                                           logger=_quiet_logger()))
    except I24Error as exc:
        err_console.print(f"[yellow]warning:[/] version {d.serial} is written but was not "
                          f"published: {escape(exc.message)} ({exc.reason}). Run 'i24net "
                          "directory publish' once the broker is up.", soft_wrap=True)
        return
    console.print(f"  published version {d.serial} on {escape(d.prefix)}/directory via "
                  f"{ep.host}:{ep.port}: the running router and nodes adopt it now")


@directory.command("rotate")
@click.argument("agency")
@home_option
def directory_rotate(agency: str, home: str | None) -> None:
    """Give AGENCY new keys and issue the next directory version (published to a running
    network)."""
    h = Home.resolve(home)
    check_agency(h.directory(), agency)
    d, _ = h.rotate(agency)
    console.print(f"rotated keys of {agency} (key version {d.agency(agency).key_version}); "
                  f"directory is now version {d.serial}")
    publish_version(h, d)


@directory.command("rotate-prekeys")
@click.argument("agencies", nargs=-1)
@home_option
def directory_rotate_prekeys(agencies: tuple[str, ...], home: str | None) -> None:
    """Give AGENCIES (default: every active agency) a new prekey and issue the next directory
    version (published to a running network; its nodes load their new prekeys when it
    arrives).

    The old prekey stays, retired, for the directory's grace period (messages in flight
    were sealed to it), then is erased: from a running node's memory when the grace ends,
    and from the key file at the next rotation. Once erased, a stolen long-term key no
    longer opens what was sealed to it (docs/protocol.md, forward secrecy)."""
    h = Home.resolve(home)
    check_agencies(h.directory(), agencies)
    d = h.rotate_prekeys(list(agencies) or None)
    grace_h = d.prekey_grace_ms / 3_600_000
    who = ", ".join(agencies) if agencies else "every active agency"
    console.print(f"new prekey for {escape(who)}; the old ones are kept {grace_h:g} h for "
                  f"messages in flight; directory is now version {d.serial}")
    publish_version(h, d)


@directory.command("revoke")
@click.argument("agency")
@home_option
def directory_revoke(agency: str, home: str | None) -> None:
    """Revoke AGENCY; takes effect at the new directory version issued now (published to a
    running network, so the router refuses AGENCY's next message without a restart)."""
    h = Home.resolve(home)
    check_agency(h.directory(), agency)
    d = h.revoke(agency)
    console.print(f"revoked {agency}; directory is now version {d.serial}")
    publish_version(h, d)


@directory.command("issue")
@home_option
def directory_issue(home: str | None) -> None:
    """Issue a new directory version from the edited network.toml (published to a running
    network)."""
    h = Home.resolve(home)
    d = h.reissue()
    console.print(f"issued directory version {d.serial} ({len(d.agencies)} agencies)")
    publish_version(h, d)


@directory.command("publish")
@click.option("--timeout", type=float, default=PUBLISH_TIMEOUT_S, show_default=True,
              metavar="SECONDS", help="How long to wait for the broker.")
@home_option
def directory_publish(timeout: float, home: str | None) -> None:
    """Publish the current signed directory (retained) to the running broker, for the router
    and the nodes to adopt; exit 1 if the broker cannot be reached."""
    from i24net.shell.runtime import publish_directory

    h = Home.resolve(home)
    d = h.directory()
    ep = asyncio.run(publish_directory(h, timeout=timeout, logger=_quiet_logger()))
    console.print(f"published directory version {d.serial} on {escape(d.prefix)}/directory "
                  f"via {ep.host}:{ep.port}")
