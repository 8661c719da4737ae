"""``i24net broker / router / node`` (run the daemons) and ``publish / inbox`` (use a node)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from datetime import UTC, datetime
from typing import Any

import click
from rich.markup import escape
from rich.table import Table

from i24net.cli import (
    EXIT_ERROR,
    EXIT_REFUSED,
    check_agencies,
    check_agency,
    cli,
    console,
    err_console,
    home_option,
    plain_text,
    require_running,
)
from i24net.cli.envelope import compose, message_options
from i24net.config.home import ROUTER_ACCOUNT, Home
from i24net.config.logsetup import CHATTY, configure_logging
from i24net.core.errors import WaitTimeout
from i24net.core.labels import Label, Precedence
from i24net.ops.client import enqueue, open_store

log_option = click.option("--log-level", default="INFO", show_default=True,
                          type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"],
                                            case_sensitive=False))


def _logging(level: str, name: str) -> logging.Logger:
    configure_logging(level, quiet=CHATTY)
    return logging.getLogger(f"i24net.{name}")


async def _until_signalled(main: Any) -> None:
    """Run ``main`` (an awaitable) until SIGTERM or SIGINT, then cancel it cleanly."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    task = asyncio.ensure_future(main)
    waiter = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        waiter.cancel()
        task.result()
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


@cli.command()
@click.option("--engine", type=click.Choice(["embedded", "mosquitto", "nats"]), default=None,
              help="Broker engine (default from network.toml): embedded (amqtt), mosquitto, "
              "or nats (a local NATS cluster with MQTT and JetStream, as many members as "
              "[broker] members says, default 3; see brokers/README.md).")
@click.option("--member", type=int, default=None, metavar="K",
              help="nats only: run member K of the cluster alone (i24net up runs each member "
              "as its own process). Default: every member.")
@click.option("--port", type=int, default=None,
              help="Port (default from network.toml); for nats, member 1's MQTT port, "
              "member k's is port + 10(k-1).")
@click.option("--tls/--no-tls", default=None,
              help="Serve MQTT over TLS with a CA generated into the home (broker/tls/ca.crt)"
              "; clients verify the broker against it. Mosquitto adds a TLS listener; NATS "
              "members speak TLS only, routes mutually. Default: tls in network.toml's "
              "[broker].")
@click.option("--tls-port", type=int, default=None,
              help="Mosquitto's TLS port (default: the plain port + 1; 0 picks a free one).")
@home_option
@log_option
def broker(engine: str | None, member: int | None, port: int | None, tls: bool | None,
           tls_port: int | None, home: str | None, log_level: str) -> None:
    """Run the network's MQTT broker on 127.0.0.1 with per-agency accounts and topic ACLs.

    With TLS, the endpoint file points every i24net client at the TLS listener and its CA;
    Mosquitto also keeps a plain listener on 127.0.0.1 (it cannot run without one here),
    which i24net's clients do not use.
    """
    from i24net.shell.runtime import (
        Endpoint,
        endpoint_file,
        follow_directory,
        make_broker,
        publish_directory,
    )

    h = Home.resolve(home)
    log = _logging(log_level, "broker" if member is None else f"broker-{member}")
    use_tls = h.spec().broker.tls if tls is None else tls
    name = engine or h.spec().broker.engine
    if member is not None:
        _broker_member(h, name, member, port, log, use_tls)
        return

    async def main() -> None:
        async with make_broker(h, engine, port, logger=log, tls=use_tls,
                               tls_port=tls_port) as b:
            addresses = tuple(b.addresses) if len(b.addresses) > 1 else ()
            if use_tls:
                from i24net.broker import MosquittoBroker
                from i24net.shell.runtime import tls_dir

                ca = str(tls_dir(h) / "ca.crt")
                if isinstance(b, MosquittoBroker):
                    assert b.tls_port is not None
                    ep = Endpoint(name, b.host, b.tls_port, ca)
                else:  # NATS: TLS on the members' own ports (make_broker refused the rest)
                    ep = Endpoint(name, b.host, b.port, ca, addresses=addresses)
            else:
                ep = Endpoint(name, b.host, b.port, addresses=addresses)
            endpoint_file(h).write_text(ep.to_json())
            # The directory is retained on its topic so every node finds the current one.
            await publish_directory(h, ep=ep, timeout=30.0, logger=log)
            how = "" if not ep.tls_ca else f" over TLS (CA {ep.tls_ca}" + (
                f"; plain listener {b.port} unused)" if ep.port != b.port else ")")
            where = " ".join(f"{h_}:{p_}" for h_, p_ in ep.members)
            log.info("broker ready on %s (%s)%s", where, ep.engine, how)
            console.print(f"ready {where}{' TLS' if ep.tls_ca else ''}")
            try:
                # A revocation (a new directory version) reloads the accounts in place.
                await follow_directory(h, b, logger=log)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    endpoint_file(h).unlink()

    asyncio.run(_until_signalled(main()))


def _broker_member(h: Home, engine: str, member: int, port: int | None,
                   log: logging.Logger, tls: bool) -> None:
    """One member of a clustered broker, in this process (``i24net broker --member K``)."""
    from i24net.core.errors import TransportError
    from i24net.shell.runtime import (
        Endpoint,
        follow_directory,
        make_broker,
        publish_directory,
        tls_dir,
    )

    ca = str(tls_dir(h) / "ca.crt") if tls else None

    async def main() -> None:
        async with make_broker(h, engine, port, logger=log, member=member, tls=tls) as b:
            log.info("cluster member %d ready on %s:%d", member, b.host, b.port)
            console.print(f"ready {b.host}:{b.port} member {member}")
            # The retained directory lives in the cluster: publish it through this member
            # once a quorum of members is up (every member does; the copies are the same
            # bytes). The first MQTT login on a member also sets its MQTT state up, which
            # would otherwise wait for the first client after the next member death.
            here = Endpoint(engine, b.host, b.port, ca)
            if ROUTER_ACCOUNT not in h.broker_passwords():
                # a machine's export running a member: the members of the homes that hold
                # the router account publish it; this one serves it once it is retained
                log.info("member %d: this home holds no router account; the directory is "
                         "published through the other members", member)
                await follow_directory(h, b, logger=log)
                return
            for _ in range(60):
                try:
                    await publish_directory(h, timeout=5.0, logger=log, ep=here,
                                            client_suffix=f"directory-{member}")
                    log.info("published the directory through member %d", member)
                    break
                except TransportError:
                    await asyncio.sleep(1.0)
            else:
                log.warning("could not publish the directory: the cluster has no quorum")
            await follow_directory(h, b, logger=log)

    asyncio.run(_until_signalled(main()))


def _brokers(addresses: tuple[str, ...]) -> list[tuple[str, int]]:
    from i24net.core.netspec import parse_address

    return [parse_address(a, "--broker") for a in addresses]


broker_list_option = click.option(
    "--broker", "brokers", multiple=True, metavar="HOST:PORT",
    help="A broker (cluster member) to connect to; repeat for several: the daemon starts at "
    "one and fails over to the next. Default: the running broker, else network.toml.")


@cli.command()
@click.option("--shard", "shard_text", default=None, metavar="k/K",
              help="Serve shard k of K (1-based): this router handles the senders whose id "
              "hashes to k, and takes over the shard of any router of the K that dies, "
              "until it is back. K must match [router] shards in network.toml. Default: "
              "1/K (the only router when K is 1).")
@click.option("--takeover/--no-takeover", default=None,
              help="Take over the shards of routers that died (default: yes, unless the "
              "network's router shards run on several machines, whose local shard leases "
              "cannot see each other).")
@broker_list_option
@home_option
@log_option
def router(shard_text: str | None, takeover: bool | None, brokers: tuple[str, ...],
           home: str | None, log_level: str) -> None:
    """Run a router: check, stamp and forward every submitted message of its shard."""
    from i24net.core.errors import ConfigError
    from i24net.core.shards import Shard
    from i24net.shell.runtime import endpoint, make_router
    from i24net.shell.shard_host import ShardHost

    h = Home.resolve(home)
    count = h.spec().router_shards
    shard = Shard.parse(shard_text) if shard_text else Shard(1, count)
    if shard.count != count:
        raise ConfigError(f"--shard {shard} does not match this network's {count} router "
                          f"shard(s) ([router] shards in network.toml)", reason="config.shard")
    if shard_text is None and count > 1:
        raise ConfigError(f"this network has {count} router shards: start one router per "
                          "shard with --shard k/K", reason="config.shard")
    from i24net.config.machine import share_of

    share = share_of(h)
    if shard.index not in share.router_shards:
        raise ConfigError(f"router shard {shard.index} does not run from this home: it was "
                          "exported to another machine, or this machine's export does not "
                          "hold its key (machine.toml)", reason="config.shard")
    if takeover and share.split:
        raise ConfigError("--takeover: this network's router shards run on several machines, "
                          "and a router cannot tell whether another machine's router of a "
                          "shard still runs; give --no-takeover", reason="config.shard")
    takeover = not share.split if takeover is None else takeover
    log = _logging(log_level, "router" if count == 1 else f"router-{shard.index}")
    ep = endpoint(h).with_addresses(_brokers(brokers))

    async def main() -> None:
        from i24net.shell.leases import open_leases

        leases = await open_leases(h, ep, log)
        host = ShardHost(h, shard, lambda s: make_router(h, logger=log, shard=s, ep=ep),
                         takeover=takeover, logger=log, leases=leases)
        runner = asyncio.ensure_future(host.run())
        ready = asyncio.ensure_future(host.ready.wait())
        await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            ready.cancel()
            runner.result()
            return
        log.info("router ready (shard %s)", shard)
        console.print(f"ready router {shard}")
        await runner

    asyncio.run(_until_signalled(main()))


@cli.command()
@click.argument("agency")
@click.option("--manual-review", is_flag=True, envvar="I24NET_MANUAL_REVIEW",
              help="Notice authority only: leave screened notice requests under review "
              "for 'i24net notice review' instead of publishing them at once (also "
              "$I24NET_MANUAL_REVIEW=1, which 'i24net up' passes on).")
@broker_list_option
@home_option
@log_option
def node(agency: str, manual_review: bool, brokers: tuple[str, ...], home: str | None,
         log_level: str) -> None:
    """Run AGENCY's node daemon: outbox, inbox, receipts, retries.

    On the notice authority (GS) it also runs the notice desk, whose register is kept in
    state/notices-AGENCY.sqlite: requests are screened (Article 3) and, unless
    --manual-review, published at once.
    """
    h = Home.resolve(home)
    log = _logging(log_level, f"node-{agency}")
    _run_host(h, agency, [agency], manual_review, brokers, log,
              ready_line=f"ready {agency}")


@cli.command()
@click.argument("name")
@click.option("--agencies", "agency_list", required=True, metavar="A,B,...",
              help="The agencies this host runs, comma-separated.")
@click.option("--manual-review", is_flag=True, envvar="I24NET_MANUAL_REVIEW",
              help="As for 'i24net node': the notice desk leaves screened requests for "
              "'i24net notice review'.")
@broker_list_option
@home_option
@log_option
def host(name: str, agency_list: str, manual_review: bool, brokers: tuple[str, ...],
         home: str | None, log_level: str) -> None:
    """Run the nodes of many agencies in one process (what 'i24net up' starts).

    Each agency keeps its own broker connection and account, store, audit chain and keys;
    the host prints 'up AGENCY' as each starts and 'ready NAME N agencies' when all are.
    If one cannot start, the host stops the others and exits 1 naming it. Its control
    socket (state/ctl/NAME.sock) serves 'i24net stop/start/status' and 'publish'.
    """
    h = Home.resolve(home)
    agencies = [a.strip() for a in agency_list.split(",") if a.strip()]
    log = _logging(log_level, name)
    _run_host(h, name, agencies, manual_review, brokers, log, ready_line=None)


def _run_host(h: Home, name: str, agencies: list[str], manual_review: bool,
              brokers: tuple[str, ...], log: logging.Logger, *,
              ready_line: str | None) -> None:
    from i24net.shell.host import HostStartError, NodeHost
    from i24net.shell.runtime import endpoint, make_node

    ep = endpoint(h).with_addresses(_brokers(brokers))
    d = h.directory()
    check_agencies(d, agencies)
    passwords = h.broker_passwords()

    def make(agency: str) -> Any:
        return make_node(h, agency, logger=logging.getLogger(f"i24net.node-{agency}"),
                         auto_review=not manual_review, ep=ep,
                         password=passwords.get(agency))

    def say(line: str) -> None:
        if ready_line is None or not line.startswith(("up ", "ready ")):
            click.echo(line)

    async def main() -> None:
        node_host = NodeHost(h, name, agencies, make, logger=log, say=say)
        runner = asyncio.ensure_future(node_host.run())
        ready = asyncio.ensure_future(node_host.ready.wait())
        await asyncio.wait({runner, ready}, return_when=asyncio.FIRST_COMPLETED)
        if runner.done():
            ready.cancel()
            runner.result()
            return
        log.info("%s ready with %d agencies", name, len(agencies))
        if ready_line:
            click.echo(ready_line)
        await runner

    try:
        asyncio.run(_until_signalled(main()))
    except HostStartError as exc:
        click.echo(f"failed {exc.agency}: {exc.message}")
        raise SystemExit(EXIT_ERROR) from None


@cli.command()
@message_options
@click.option("--wait", "wait_s", type=float, default=None, metavar="SECONDS",
              help="Wait for the router's verdict and the delivery receipts.")
@click.option("--queue", is_flag=True,
              help="Queue the message even when the sender's node is not running: it waits "
              "in the outbox and goes when the node starts (with --wait: waits for that).")
@click.option("-q", "--quiet", is_flag=True, help="Print only the message id.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object: id, kind, sender, recipients, label, state "
              "(queued, accepted, delivered, refused, expired), reason, receipts, "
              "node_running.")
@home_option
def publish(wait_s: float | None, queue: bool, quiet: bool, as_json: bool, home: str | None,
            **o: Any) -> None:
    """Send a message through the sender's node (durable before this returns).

    The message is sealed and written to the sender's outbox; the running node daemon sends
    it and retries until receipts arrive. The sender's node must be running (exit 7
    otherwise, nothing queued) unless --queue. With --wait: exit 0 when every recipient
    receipted, 3 if refused, 4 on timeout. An unknown sender, recipient or group exits 6.
    """
    if quiet and as_json:
        raise click.UsageError("give -q or --json, not both")
    h = Home.resolve(home)
    header, body = compose(h, o)
    node = require_running(h, header.sender, queue=queue)
    store = open_store(h, header.sender)
    waiting = _Waiting(h, header, store, say=not (quiet or as_json))
    waiting.node_running = node in ("up", "starting", "busy")
    try:
        enqueue(h, header, body, store, notify=False)  # durable before anything else happens
        if quiet:
            click.echo(header.id_hex)
        waiting.say(f"queued {header.kind} {header.id_hex} in {header.sender}'s outbox for "
                    f"{', '.join(header.recipients)}")
        try:
            _send(h, header, waiting, wait_s)
        except WaitTimeout:
            waiting.report(as_json)
            raise
        except click.exceptions.Exit:  # refused
            waiting.report(as_json)
            raise
        waiting.report(as_json)
    finally:
        store.close()


def _send(h: Home, header: Any, waiting: _Waiting, wait_s: float | None) -> None:
    """Wake the sender's node and, with ``wait_s``, follow the message until it is final."""
    from i24net.ops.supervisor import Supervisor
    from i24net.shell.control import ControlError, request, watch

    ctl = Supervisor(h).control_path(header.sender)
    deadline = time.monotonic() + (wait_s or 0.0)
    told = False
    while True:
        try:
            # Watch before waking the node: no event can slip between the two.
            events = watch(ctl, header.sender, header.id_hex, deadline) if wait_s else None
            if events is not None and waiting.show(next(events)):
                return
            request(ctl, {"op": "wake", "agency": header.sender})
            waiting.node_running = True
        except (ControlError, StopIteration):
            waiting.node_running = False
            if not told:
                waiting.say(f"[yellow]{header.sender}'s node is not running[/]: the "
                            f"message waits in its outbox and goes when it starts ('i24net "
                            f"up' or 'i24net start {header.sender}')", soft_wrap=True)
                told = True
            if wait_s is None or time.monotonic() >= deadline:
                break
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0)))  # until it starts
            continue
        if events is None:
            return
        for event in events:
            if waiting.show(event):
                return
        if time.monotonic() >= deadline:
            break
    if wait_s is None:
        return
    missing = sorted(set(header.recipients) - waiting.seen)
    raise WaitTimeout(f"no {'receipt' if waiting.accepted else 'answer from the router'} "
                      f"within {wait_s:g}s (waiting on {', '.join(missing) or 'the router'});"
                      f" the message stays in the outbox and the node keeps retrying. Is the "
                      f"network up? ('i24net status')", reason="timeout")


class _Waiting:
    """What ``publish`` has heard of its message, from the node's events; says it as it
    goes (unless quiet) and reports it at the end (``--json``)."""

    def __init__(self, h: Home, header: Any, store: Any, *, say: bool = True) -> None:
        self.h, self.header, self.store = h, header, store
        self.accepted = False
        self.seen: set[str] = set()
        self.loud = say
        self.node_running: bool | None = None

    def say(self, text: str, **kw: Any) -> None:
        if self.loud:
            console.print(text, **kw)

    def report(self, as_json: bool) -> None:
        """``--json``: the message as the sender's outbox holds it now."""
        if not as_json:
            return
        e = self.store.outbox_get(self.header.id)
        hd = self.header
        click.echo(json.dumps({
            "id": hd.id_hex, "kind": hd.kind, "sender": hd.sender,
            "recipients": list(hd.recipients), "label": hd.label.marking,
            "state": e.state if e is not None else "queued",
            "reason": (e.reason or None) if e is not None else None,
            "receipts": dict(sorted(e.receipts.items())) if e is not None else {},
            "node_running": self.node_running}))

    def show(self, event: dict[str, Any]) -> bool:
        """Print what is new; True once the message is final (delivered, or refused)."""
        kind = event.get("event")
        if kind == "state":
            state = event.get("state")
            if state in ("accepted", "delivered"):
                self._accepted()
            for r, status in sorted(event.get("receipts", {}).items()):
                self._receipt(r, status)
            if state == "refused":
                self._refused(str(event.get("reason", "")))
            if state == "expired":
                raise WaitTimeout("the message expired before every recipient receipted",
                                  reason="time.expired")
            if state == "delivered":
                return self._delivered()
            return False
        if kind == "accepted":
            self._accepted()
        elif kind == "receipt":
            self._receipt(str(event.get("peer")), str(event.get("status")))
        elif kind == "refused":
            self._refused(str(event.get("reason", "")), str(event.get("detail", "")))
        elif kind == "deferred":
            self.say(f"  deferred by the router ({event.get('reason')}); the node retries")
        elif kind == "expired":
            raise WaitTimeout("the message expired before every recipient receipted",
                              reason="time.expired")
        elif kind == "delivered":
            return self._delivered()
        return False

    def _accepted(self) -> None:
        if not self.accepted:
            self.say("[green]accepted[/] by the router")
            self.accepted = True

    def _receipt(self, receiver: str, status: str) -> None:
        if receiver not in self.seen:
            self.seen.add(receiver)
            self.say(f"  receipt: {receiver} {status}")

    def _delivered(self) -> bool:
        self._accepted()
        e = self.store.outbox_get(self.header.id)
        for r, status in sorted(e.receipts.items()):
            self._receipt(r, status)
        self.say(f"delivered to {len(e.receipts)} recipient(s)")
        return True

    def _refused(self, reason: str, detail: str = "") -> None:
        """Say the router's refusal in its own words (``detail``, carried by the node's
        event), or the reason code's description when only the outbox state is known."""
        from i24net.core.policy import REASONS

        e = self.store.outbox_get(self.header.id)
        code = (e.reason if e is not None else "") or reason
        text = f"[red]refused[/] ({plain_text(code)}): {plain_text(detail or REASONS.get(code, ''))}"
        if self.loud:
            console.print(text, soft_wrap=True)
        else:  # -q / --json: stdout has the id or the JSON; the refusal goes to stderr
            err_console.print(text, soft_wrap=True)
        raise click.exceptions.Exit(EXIT_REFUSED)


def _item_json(i: Any) -> dict[str, Any]:
    return {"id": i.msg_id.hex(), "from": i.sender, "kind": i.kind, "label": i.label,
            "precedence": Precedence(i.precedence).name, "subject": i.subject,
            "text": i.text, "data": i.data, "created_ms": i.created_ms,
            "received_ms": i.received_ms, "state": i.state,
            "ref": i.ref.hex() if i.ref else None}


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@cli.command()
@click.argument("agency")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: an array of messages (oldest first); with --follow one "
              "object per line (NDJSON).")
@click.option("--follow", is_flag=True, help="Keep printing new messages (Ctrl-C to stop).")
@click.option("--limit", type=int, default=50, show_default=True)
@click.option("--operation", "operation", default=None, metavar="NAME",
              help="Only the traffic of joint operation NAME (labelled with its caveat).")
@home_option
def inbox(agency: str, as_json: bool, follow: bool, limit: int, operation: str | None,
          home: str | None) -> None:
    """List AGENCY's inbox: id, time, sender, kind, label, precedence, subject, state.

    The id is the one --ref takes (a forward, a reply). 'i24net operation show NAME
    --agency AGENCY' shows one operation's traffic as threads.
    """
    h = Home.resolve(home)
    d = h.directory()
    check_agency(d, agency)
    if operation is not None:
        d.operation(operation)
    store = open_store(h, agency, readonly=True)

    def listed() -> list[Any]:
        if operation is None:
            return list(store.inbox_list(limit=limit))
        return [i for i in store.inbox_list(limit=1_000_000)
                if operation in Label.parse(i.label).caveats][:limit]

    items = list(reversed(listed()))
    if as_json and not follow:
        click.echo(json.dumps([_item_json(i) for i in items], indent=2, default=str))
        return
    if not follow:
        t = Table(title=f"{agency} inbox ({len(items)} shown)")
        t.add_column("id", no_wrap=True)
        t.add_column("received", no_wrap=True)
        for col in ("from", "kind", "label", "prec", "subject", "state"):
            t.add_column(col)
        for i in items:
            t.add_row(i.msg_id.hex(), _fmt_ms(i.received_ms), i.sender, i.kind,
                      f"[{d.scale.colour(i.label.split('//')[0])}]{escape(i.label)}[/]",
                      f"[{Precedence(i.precedence).colour}]{Precedence(i.precedence).name}[/]",
                      escape(i.subject), i.state)
        console.print(t)
        return
    shown = {i.msg_id for i in items}
    for i in items:
        _print_item(i, as_json)
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(0.5)
            for i in reversed(listed()):
                if i.msg_id not in shown:
                    shown.add(i.msg_id)
                    _print_item(i, as_json)


def _print_item(i: Any, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(_item_json(i), default=str))
    else:
        console.print(f"{i.msg_id.hex()} {_fmt_ms(i.received_ms)} {i.sender:>8} "
                      f"{i.kind:<14} {i.label:<20} {Precedence(i.precedence).name:<9} "
                      f"{i.subject} [{i.state}]", markup=False)


def _outbox_json(e: Any) -> dict[str, Any]:
    return {"id": e.msg_id.hex(), "kind": e.kind, "to": list(e.recipients),
            "subject": e.subject, "state": e.state, "reason": e.reason or None,
            "receipts": dict(sorted(e.receipts.items())), "attempts": e.attempts,
            "created_ms": e.created_ms}


@cli.command()
@click.argument("agency")
@click.option("--json", "as_json", is_flag=True,
              help="Print JSON: an array of messages, oldest first.")
@click.option("--limit", type=int, default=50, show_default=True)
@home_option
def outbox(agency: str, as_json: bool, limit: int, home: str | None) -> None:
    """List what AGENCY sent: id, recipients, kind, subject, state (queued, accepted,
    delivered, refused, expired) with the refusal's reason and the receipts."""
    h = Home.resolve(home)
    check_agency(h.directory(), agency)
    store = open_store(h, agency, readonly=True)
    entries = list(reversed(store.outbox_list(limit=limit)))  # oldest first
    if as_json:
        click.echo(json.dumps([_outbox_json(e) for e in entries], indent=2, default=str))
        return
    t = Table(title=f"{agency} outbox ({len(entries)} shown)")
    t.add_column("id", no_wrap=True)
    t.add_column("created", no_wrap=True)
    for col in ("to", "kind", "subject", "state", "receipts"):
        t.add_column(col)
    for e in entries:
        state = {"delivered": "[green]delivered[/]", "refused": "[red]refused[/]"}.get(
            e.state, escape(e.state))
        if e.reason:
            state += f" ({escape(e.reason)})"
        t.add_row(e.msg_id.hex(), _fmt_ms(e.created_ms), ", ".join(e.recipients), e.kind,
                  escape(e.subject), state, f"{len(e.receipts)}/{len(e.recipients)}")
    console.print(t)
