"""``i24net envelope seal / inspect / open``: the envelope on its own, no network needed."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from i24net.cli import (
    EXIT_REFUSED,
    check_addressing,
    check_agency,
    cli,
    console,
    err_console,
    home_option,
    read_input,
)
from i24net.config.home import Home, now_ms
from i24net.core import envelope as env
from i24net.core.errors import I24Error, PolicyError
from i24net.core.labels import TLP, Evaluation, HandlingCodes, Label, Precedence
from i24net.core.policy import complete_addressing, decide, reader_clearance

MESSAGE_KINDS = ("message", "diffusion", "alert", "notice-request", "notice",
                 "notice-cancel-request", "release")


def message_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options shared by ``envelope seal`` and ``publish``."""
    opts = [
        click.option("--as", "sender", required=True, metavar="AGENCY", help="Sending agency."),
        click.option("--to", "to", required=True, metavar="LIST",
                     help="Recipients: agency ids and @GROUPs, comma-separated."),
        click.option("--kind", type=click.Choice(MESSAGE_KINDS), default="message",
                     show_default=True),
        click.option("--classification", "level", required=True, metavar="LEVEL",
                     help="Classification level, e.g. CONFIDENTIAL."),
        click.option("--caveat", "caveats", multiple=True, metavar="X",
                     help="Caveat (repeatable), e.g. --caveat EU."),
        click.option("--handling", "handling", multiple=True, metavar="H",
                     help="SIENA handling code H0-H3 (repeatable)."),
        click.option("--restriction", "h3_text", default="", metavar="TEXT",
                     help="Free-text restriction for handling code H3."),
        click.option("--precedence", default="ROUTINE", show_default=True,
                     type=click.Choice([p.name for p in Precedence], case_sensitive=False)),
        click.option("--tlp", default=None, help="TLP 2.0 marking (CLEAR, GREEN, AMBER, "
                     "AMBER+STRICT, RED)."),
        click.option("--evaluation", default=None, metavar="XN",
                     help="SIENA evaluation code, e.g. B2."),
        click.option("--ref", default=None, metavar="ID",
                     help="Id (hex) of an earlier message this one refers to or forwards."),
        click.option("--release", "release_file", default=None, metavar="FILE",
                     type=click.Path(exists=True, dir_okay=False, allow_dash=True),
                     help="Signed release from the source (forwarding an H2 message); "
                     "'-': stdin."),
        click.option("--ttl", "ttl_hours", type=float, default=None, metavar="HOURS",
                     help="Lifetime (default from network.toml)."),
        click.option("--subject", required=True),
        click.option("--text", default=None,
                     help="The message text (default: none, the subject says it all)."),
        click.option("--body-file", type=click.Path(exists=True, dir_okay=False,
                                                    allow_dash=True), default=None,
                     metavar="FILE", help="The message text from FILE (UTF-8); '-': stdin."),
        click.option("--data", "data", multiple=True, metavar="KEY=VALUE",
                     help="Structured field (repeatable), e.g. --data colour=red."),
    ]
    return functools.reduce(lambda f, o: o(f), reversed(opts), fn)


def _read_text(path: str) -> str:
    """The body file (stdin for "-") as text: UTF-8 (the body's wire encoding), or a usage
    error."""
    raw = read_input(path)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.BadParameter(
            f"{'stdin' if path == '-' else path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
            "convert it (e.g. iconv -t UTF-8) or send binary data base64-encoded",
            param_hint="--body-file") from None


def compose(h: Home, o: dict[str, Any]) -> tuple[env.Header, env.Body]:
    """Build the header and body that the message options describe."""
    d = h.directory()
    if o["text"] is not None and o["body_file"] is not None:
        raise click.UsageError("give --text or --body-file, not both")
    if o["body_file"] == "-" and o["release_file"] == "-":
        raise click.UsageError("--body-file and --release cannot both read stdin")
    check_agency(d, o["sender"], "--as")
    # no text at all is fine: a short alert says it in its subject
    text = _read_text(o["body_file"]) if o["body_file"] is not None else o["text"] or ""
    data: dict[str, str] = {}
    for item in o["data"]:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"--data expects KEY=VALUE, got {item!r}")
        data[key] = value
    addressing = [a.strip() for a in o["to"].split(",") if a.strip()]
    if not addressing:
        raise click.UsageError("--to names no recipient")
    check_addressing(d, addressing)
    addressing = complete_addressing(o["kind"], addressing, o["sender"], d)
    ref = None
    if o["ref"]:
        try:
            ref = bytes.fromhex(o["ref"])
        except ValueError:
            raise click.UsageError("--ref must be a message id in hex") from None
        if len(ref) != env.ID_SIZE:
            raise click.UsageError(f"--ref must be {env.ID_SIZE * 2} hex digits")
    ttl_hours = o["ttl_hours"] if o["ttl_hours"] is not None else h.spec().default_ttl_hours
    header = env.make_header(
        d, sender=o["sender"], addressing=addressing, kind=o["kind"],
        label=Label(o["level"].upper(), frozenset(c.upper() for c in o["caveats"])),
        now_ms=now_ms(), ttl_ms=int(ttl_hours * 3600_000), random_bytes=os.urandom,
        precedence=Precedence.parse(o["precedence"]),
        handling=HandlingCodes.parse(o["handling"], o["h3_text"]),
        tlp=TLP.parse(o["tlp"]) if o["tlp"] else None,
        evaluation=Evaluation.parse(o["evaluation"]) if o["evaluation"] else None,
        ref=ref,
        release=read_input(o["release_file"]) if o["release_file"] else None,
    )
    return header, env.Body(o["subject"], text, data)


def seal_with_home(h: Home, header: env.Header, body: env.Body) -> bytes:
    d = h.directory()
    return env.seal(header, body, h.keys(header.sender), env.recipient_keys(d, header),
                    random_bytes=os.urandom)


@cli.group()
def envelope() -> None:
    """Seal, inspect and open envelopes as files (no broker needed)."""


@envelope.command("seal")
@message_options
@click.option("-o", "--output", default="-", show_default=True,
              type=click.Path(dir_okay=False, allow_dash=True),
              help="Where to write the sealed envelope; '-': stdout (not a terminal).")
@home_option
def envelope_seal(output: str, home: str | None, **o: Any) -> None:
    """Sign and encrypt a message to its recipients; write the envelope to a file or
    stdout (the line saying what was sealed then goes to stderr)."""
    h = Home.resolve(home)
    to_stdout = output == "-"
    if to_stdout and sys.stdout.isatty():
        raise click.UsageError("refusing to write a binary envelope to the terminal: give "
                               "-o FILE or redirect stdout")
    header, body = compose(h, o)
    raw = seal_with_home(h, header, body)
    if to_stdout:
        out = sys.stdout.buffer
        out.write(raw)
        out.flush()
    else:
        Path(output).write_bytes(raw)
    (err_console if to_stdout else console).print(
        f"sealed {header.kind} {header.id_hex} from {header.sender} to "
                  f"{len(header.recipients)} recipient(s) "
                  f"[{h.directory().scale.colour(header.label.level)}]{header.label.marking}[/]"
                  f" -> {'stdout' if to_stdout else output} ({len(raw)} bytes)")


def _signature_status(h: Home, e: env.Envelope) -> tuple[bool, str]:
    try:
        e.verify(h.directory())
    except I24Error as exc:
        return False, f"INVALID: {exc.message} ({exc.reason})"
    return True, f"valid ({e.header.sender}, directory v{h.directory().serial})"


@envelope.command("inspect")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@home_option
def envelope_inspect(file: str, as_json: bool, home: str | None) -> None:
    """Show header, label, recipients and signature status of FILE ('-': stdin). Never
    decrypts."""
    h = Home.resolve(home)
    raw = read_input(file)
    e = env.Envelope.parse(raw)
    ok, status = _signature_status(h, e)
    summary = {**e.header.summary(), "size": len(raw), "digest": e.digest.hex(),
               "signature": status, "signature_valid": ok}
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        scale = h.directory().scale
        t = Table(show_header=False, title=f"envelope {e.header.id_hex}")
        t.add_column(style="bold")
        t.add_column()
        for key, value in summary.items():
            # The header is not verified yet (and even a valid one is the sender's text):
            # escape it so "[...]" in an agency id is shown, not read as rich markup.
            if isinstance(value, list):
                value = ", ".join(map(str, value))
            value = escape(str(value))
            if key == "label":
                value = f"[{scale.colour(e.header.label.level)}]{value}[/]"
            elif key == "precedence":
                value = f"[{e.header.precedence.colour}]{value}[/]"
            elif key == "signature":
                value = f"[{'green' if ok else 'red'}]{value}[/]"
            t.add_row(key, value)
        console.print(t)
    if not ok:
        raise click.exceptions.Exit(EXIT_REFUSED)


@envelope.command("open")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--as", "agency", required=True, metavar="AGENCY", help="Opening agency.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@home_option
def envelope_open(file: str, agency: str, as_json: bool, home: str | None) -> None:
    """Verify and decrypt FILE ('-': stdin) as AGENCY; print subject and text. Exit 3 if
    refused, including when AGENCY's clearance does not dominate the label
    (clearance.recipient)."""
    h = Home.resolve(home)
    d = h.directory()
    check_agency(d, agency, "--as")
    opened = env.open_envelope(read_input(file), h.keys(agency), d)
    hd = opened.header
    # the node's re-check before anything is shown (docs/protocol.md 8.5): the label must be
    # one this agency is cleared for, whoever put its name on the envelope
    refusal = reader_clearance(d, agency, hd.label)
    if refusal:
        rec = d.agencies.get(agency)
        cleared = rec.clearance.marking if rec is not None else "nothing (not in the directory)"
        raise PolicyError(f"{agency} is cleared to {cleared}, which does not dominate the "
                          f"label {hd.label.marking} of message {hd.id_hex} from {hd.sender}: "
                          "its content is not shown (a node would refuse it the same way)",
                          reason=refusal, agency=agency, msg_id=hd.id_hex)
    fresh = env.check_freshness(hd, now_ms(), d.max_skew_ms)
    if as_json:
        click.echo(json.dumps({**hd.summary(), "subject": opened.body.subject,
                               "text": opened.body.text, "data": opened.body.data,
                               "freshness": fresh or "fresh"}, indent=2, default=str))
        return
    console.print(f"[bold]{escape(opened.body.subject)}[/]")
    console.print(f"[dim]{hd.kind} from {hd.sender}, "
                  f"[{d.scale.colour(hd.label.level)}]{hd.label.marking}[/], "
                  f"[{hd.precedence.colour}]{hd.precedence.name}[/], id {hd.id_hex}[/]")
    if fresh:
        console.print(f"[yellow]warning: {fresh} (a daemon would refuse it)[/]")
    console.print(opened.body.text, markup=False, highlight=False)
    if opened.body.data:
        for key, value in opened.body.data.items():
            console.print(f"  {key}: {value}", markup=False)


@envelope.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@home_option
def envelope_check(file: str, as_json: bool, home: str | None) -> None:
    """Run the router's decision on FILE ('-': stdin): accepted (and for whom) or the
    refusal (exit 3).

    Tells a sender, before sending, why a message would be refused. Replays and forwards
    are judged as by a router that has not seen the earlier messages.
    """
    h = Home.resolve(home)
    d = h.directory()
    decision = decide(env.Envelope.parse(read_input(file)), d, now_ms())
    if as_json:
        click.echo(json.dumps({"accepted": decision.accepted, "reason": decision.reason,
                               "message": decision.message,
                               "recipients": list(decision.recipients),
                               "agencies": list(decision.agencies),
                               "id": decision.msg_id}, indent=2))
    elif decision.accepted:
        console.print(f"[green]accepted[/] for {len(decision.recipients)} recipient(s): "
                      + ", ".join(decision.recipients))
    else:
        console.print(f"[red]refused[/] ({escape(decision.reason)}): "
                      f"{escape(decision.message)}",
                      soft_wrap=True)
    if not decision.accepted:
        raise click.exceptions.Exit(EXIT_REFUSED)
