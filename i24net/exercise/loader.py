"""Loading an exercise file: TOML text to a checked ``Exercise``, or one precise error.

Theory of operation: three passes, each of which can only fail with ``ExerciseError``:

1. syntax: ``tomllib`` (its ``TOMLDecodeError`` carries the line and column);
2. form: each table and array entry is read through the field metadata of the classes in
   ``model`` (unknown keys are refused with a "did you mean" hint, because a misspelt
   optional field would otherwise be silently ignored and the drill would test something
   else than its author meant);
3. meaning: the network is built from its source and every agency, group, label and
   name the file uses is looked up in it; references must point to earlier injects.

tomllib does not say where a key was, so ``Locator`` scans the text for the table header
(``[[inject]]`` number 3) and the key inside it; a field it cannot place is reported
without a line rather than with a wrong one.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from i24net.core.errors import I24Error
from i24net.core.labels import Label
from i24net.core.netspec import NetworkSpec, parse_spec
from i24net.exercise import model as m
from i24net.exercise.model import Bad, ExerciseError

# An exercise is a page or two of TOML; a megabyte is a mistake (or an attack on the parser).
MAX_FILE = 1 << 20

# How long after the last inject a run continues when the file gives no duration.
DEFAULT_TAIL = {"virtual": 900.0, "live": 60.0}

_TOP = ("exercise", "network", "conditions", "inject", "expect")
_ARRAYS = ("inject", "expect", "conditions.link", "conditions.filter")


class Locator:
    """Finds the line of a field path such as ``("inject", 3, "at")`` in the file text."""

    _ARRAY = re.compile(r"^\s*\[\[\s*([^\[\]]+?)\s*\]\]\s*(#.*)?$")
    _TABLE = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")

    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.headers: list[tuple[int, tuple[Any, ...]]] = []
        counts: Counter[str] = Counter()
        for n, line in enumerate(self.lines, 1):
            if a := self._ARRAY.match(line):
                dotted = self._norm(a.group(1))
                counts[dotted] += 1
                self.headers.append((n, self._path(dotted, counts, last=True)))
            elif t := self._TABLE.match(line):
                self.headers.append((n, self._path(self._norm(t.group(1)), counts)))

    @staticmethod
    def _norm(dotted: str) -> str:
        return ".".join(p.strip().strip("\"'") for p in dotted.split("."))

    @staticmethod
    def _path(dotted: str, counts: Counter[str], last: bool = False) -> tuple[Any, ...]:
        parts = dotted.split(".")
        out: list[Any] = []
        for i in range(len(parts)):
            out.append(parts[i])
            prefix = ".".join(parts[:i + 1])
            if prefix in counts and (i < len(parts) - 1 or last):
                out.append(counts[prefix])
        return tuple(out)

    def line_of(self, path: tuple[Any, ...]) -> int | None:
        """The line of ``path``: its key in its table, else the table's header."""
        for cut in range(len(path), 0, -1):
            head, key = path[:cut], path[cut:]
            for i, (n, hpath) in enumerate(self.headers):
                if hpath != head:
                    continue
                if not key:
                    return n
                end = self.headers[i + 1][0] if i + 1 < len(self.headers) else \
                    len(self.lines) + 1
                found = self._key_line(str(key[0]), n, end)
                return found or n
        if path and isinstance(path[0], str) and len(path) <= 2:
            # a top-level key, or "exercise.seed = ..." written as a dotted key
            first = self.headers[0][0] if self.headers else len(self.lines) + 1
            dotted = ".".join(str(p) for p in path)
            return self._key_line(dotted, 0, first) or self._key_line(str(path[-1]), 0, first)
        return None

    def _key_line(self, key: str, start: int, end: int) -> int | None:
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for n in range(start + 1, min(end, len(self.lines) + 1)):
            if pattern.match(self.lines[n - 1]):
                return n
        return None


class _Reader:
    """Turns parsed TOML into model values, raising ``ExerciseError`` with the field path."""

    def __init__(self, text: str, source: str, base: Path | None) -> None:
        self.text = text
        self.source = source
        self.base = base
        self._locator: Locator | None = None

    def fail(self, path: tuple[Any, ...], message: str) -> ExerciseError:
        if self._locator is None:
            self._locator = Locator(self.text)
        return ExerciseError(message, source=self.source, path=_show(path),
                             line=self._locator.line_of(path))

    # -- form -----------------------------------------------------------------------------
    def table(self, doc: Mapping[str, Any], key: str, path: tuple[Any, ...],
              required: bool = False) -> dict[str, Any]:
        if key not in doc:
            if required:
                raise self.fail(path, f"missing table [{_show(path)}]")
            return {}
        value = doc[key]
        if not isinstance(value, dict):
            raise self.fail(path, f"must be a table [{_show(path)}]")
        return value

    def array(self, doc: Mapping[str, Any], key: str, path: tuple[Any, ...]) -> list[Any]:
        value = doc.get(key, [])
        if not isinstance(value, list):
            raise self.fail(path, f"must be an array of tables [[{_show(path)}]]")
        for i, item in enumerate(value, 1):
            if not isinstance(item, dict):
                raise self.fail((*path, i), "must be a table")
        return value

    def known(self, data: Mapping[str, Any], allowed: list[str], path: tuple[Any, ...],
              what: str) -> None:
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]}?)" if close else \
                    f" (known: {', '.join(allowed)})"
                raise self.fail((*path, key), f"unknown field for {what}{hint}")

    def value(self, data: Mapping[str, Any], key: str, path: tuple[Any, ...],
              parse: Any, default: Any = None, required: bool = False) -> Any:
        if key not in data:
            if required:
                raise self.fail((*path, key), "missing")
            return default
        try:
            return parse(data[key])
        except Bad as exc:
            raise self.fail((*path, key), str(exc)) from None

    def fields_of(self, cls: type, data: Mapping[str, Any], path: tuple[Any, ...],
                  what: str, extra: tuple[str, ...] = ()) -> dict[str, Any]:
        spec = m.toml_fields(cls)
        self.known(data, [k for _, k, _, _ in spec] + list(extra), path, what)
        out: dict[str, Any] = {}
        for attr, key, meta, default in spec:
            value = self.value(data, key, path, meta["parse"], default, meta["required"])
            if value is not None or attr in out:
                out[attr] = value
        return out

    def line(self, path: tuple[Any, ...]) -> int:
        if self._locator is None:
            self._locator = Locator(self.text)
        return self._locator.line_of(path) or 0

    # -- the document ---------------------------------------------------------------------
    def read(self, doc: Mapping[str, Any]) -> tuple[m.Exercise, float | None]:
        for key in doc:
            if key not in _TOP:
                close = difflib.get_close_matches(str(key), _TOP, n=1)
                hint = f" (did you mean [{close[0]}]?)" if close else \
                    " (known: exercise, network, conditions, inject, expect)"
                raise self.fail((key,), f"unknown table or top-level key{hint}")
        ex = self.table(doc, "exercise", ("exercise",), required=True)
        self.known(ex, ["name", "description", "seed", "mode", "duration"], ("exercise",),
                   "[exercise]")
        name = self.value(ex, "name", ("exercise",), m.text, required=True)
        if not name.strip():
            raise self.fail(("exercise", "name"), "must not be empty")
        description = self.value(ex, "description", ("exercise",), m.text, "")
        seed = self.value(ex, "seed", ("exercise",), _seed, 1)
        mode = self.value(ex, "mode", ("exercise",), m.one_of(*m.MODES), "virtual")
        duration = self.value(ex, "duration", ("exercise",), m.seconds, None)

        network = self.network(self.table(doc, "network", ("network",), required=True))
        conditions = self.conditions(self.table(doc, "conditions", ("conditions",)))
        injects = []
        for i, data in enumerate(self.array(doc, "inject", ("inject",)), 1):
            injects.append(self.inject(data, i))
        expectations = []
        for i, data in enumerate(self.array(doc, "expect", ("expect",)), 1):
            expectations.append(self.expectation(data, i))
        exercise = m.Exercise(name=name, description=description, seed=seed, mode=mode,
                              duration=duration or 0.0, network=network,
                              conditions=conditions, injects=tuple(injects),
                              expectations=tuple(expectations), source=self.source)
        return exercise, duration

    def network(self, data: Mapping[str, Any]) -> m.NetworkSource:
        path = ("network",)
        self.known(data, ["preset", "spec", "synthetic", "review", "retention"], path,
                   "[network]")
        given = [k for k in ("preset", "spec", "synthetic") if k in data]
        if len(given) != 1:
            raise self.fail(path, "give exactly one of preset, spec or synthetic"
                            + (f" (found {', '.join(given)})" if given else ""))
        review = self.value(data, "review", path, m.one_of(*m.REVIEW_MODES), "auto")
        retention = self.retention(data.get("retention", {}))
        if "preset" in data:
            preset = self.value(data, "preset", path, m.one_of(*m.PRESETS))
            return m.NetworkSource(preset=preset, review=review, retention=retention)
        if "synthetic" in data:
            n = self.value(data, "synthetic", path, _synthetic)
            return m.NetworkSource(synthetic=n, review=review, retention=retention)
        rel = self.value(data, "spec", path, m.text)
        spec_path = Path(rel).expanduser()
        if not spec_path.is_absolute():
            spec_path = (self.base or Path.cwd()) / spec_path
        return m.NetworkSource(spec=spec_path, review=review, retention=retention)

    def retention(self, data: Any) -> tuple[tuple[str, str], ...]:
        """``[network.retention]``: kind = period, checked as network.toml's own."""
        from i24net.core.netspec import parse_retention

        path = ("network", "retention")
        try:
            parse_retention(data)
        except I24Error as exc:
            raise self.fail(path, exc.message.removeprefix("retention").lstrip(".: ")) \
                from None
        return tuple((str(k), v if isinstance(v, str) else f"{v}d")
                     for k, v in sorted(data.items()))

    def conditions(self, data: Mapping[str, Any]) -> m.Conditions:
        path = ("conditions",)
        values = self.fields_of(m.Conditions, data, path, "[conditions]",
                                extra=("link", "filter", "router"))
        router = None
        if "router" in data:
            rp = ("conditions", "router")
            router = m.RouterCost(**self.fields_of(
                m.RouterCost, self.table(data, "router", rp), rp, "[conditions.router]"))
        links = []
        for i, item in enumerate(self.array(data, "link", ("conditions", "link")), 1):
            p = ("conditions", "link", i)
            rule = m.LinkRule(index=i, line=self.line(p),
                              **self.fields_of(m.LinkRule, item, p, "[[conditions.link]]"))
            chosen = [k for k in ("agency", "group", "between") if k in item]
            if len(chosen) != 1:
                raise self.fail(p, "give exactly one of agency, group or between")
            if rule.group is not None and not rule.group.startswith("@"):
                raise self.fail((*p, "group"), "must be a @group (e.g. @EU)")
            if "between" in item and (len(rule.between) != 2 or
                                      any(a.startswith("@") for a in rule.between)):
                raise self.fail((*p, "between"), "must name two agencies")
            self._window(rule.start, rule.end, p)
            links.append(rule)
        filters = []
        for i, item in enumerate(self.array(data, "filter", ("conditions", "filter")), 1):
            p = ("conditions", "filter", i)
            frule = m.FilterRule(index=i, line=self.line(p),
                                **self.fields_of(m.FilterRule, item, p,
                                                 "[[conditions.filter]]"))
            if frule.to_group is not None and not frule.to_group.startswith("@"):
                raise self.fail((*p, "to_group"), "must be a @group (e.g. @EU)")
            if frule.action == "delay" and "delay_ms" not in item:
                raise self.fail((*p, "delay_ms"), "missing (action = \"delay\" needs it)")
            if frule.action == "delay" and "probability" in item:
                raise self.fail((*p, "probability"), "applies to action = \"drop\" only")
            self._window(frule.start, frule.end, p)
            filters.append(frule)
        return m.Conditions(**values, router=router, links=tuple(links),
                            filters=tuple(filters))

    def _window(self, start: float, end: float | None, p: tuple[Any, ...]) -> None:
        if end is not None and end <= start:
            raise self.fail((*p, "end"), "must be after start")

    def inject(self, data: Mapping[str, Any], i: int) -> m.Inject:
        path = ("inject", i)
        action = self.value(data, "action", path, m.text, required=True)
        cls = m.INJECTS.get(action)
        if cls is None:
            close = difflib.get_close_matches(action, list(m.INJECTS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else \
                f" (one of {', '.join(m.INJECTS)})"
            raise self.fail((*path, "action"), f"unknown action {action!r}{hint}")
        values = self.fields_of(cls, data, path, f"action {action!r}", extra=("action",))
        return cls(index=i, line=self.line(path), **values)

    def expectation(self, data: Mapping[str, Any], i: int) -> m.Expectation:
        path = ("expect", i)
        key = "kind"
        if key not in data:
            raise self.fail(path, "missing kind (one of " + ", ".join(m.EXPECTATIONS) + ")")
        kind = self.value(data, key, path, m.text)
        cls = m.EXPECTATIONS.get(kind)
        if cls is None:
            close = difflib.get_close_matches(kind, list(m.EXPECTATIONS), n=1)
            hint = f" (did you mean {close[0]}?)" if close else \
                f" (one of {', '.join(m.EXPECTATIONS)})"
            raise self.fail((*path, key), f"unknown expectation {kind!r}{hint}")
        values = self.fields_of(cls, data, path, f"expectation {kind!r}", extra=(key,))
        return cls(index=i, line=self.line(path), **values)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad("must be a whole number")
    if not 0 <= value < 2 ** 63:
        raise Bad("must be between 0 and 2**63-1")
    return value


def _synthetic(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise Bad("must be a whole number of agencies")
    if not 3 <= value <= m.MAX_SYNTHETIC:
        raise Bad(f"must be 3-{m.MAX_SYNTHETIC} agencies")
    return value


def _show(path: tuple[Any, ...]) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


# -- meaning: the exercise against its network ----------------------------------------------

class _Network:
    """What the checks need to know about the network: agencies, groups, labels."""

    def __init__(self, spec: NetworkSpec) -> None:
        self.spec = spec
        self.agencies = {a.id: a for a in spec.agencies}
        regions = {a.region for a in spec.agencies}
        self.groups = {"ALL", "NCB", *regions, *spec.groups}
        self.authority = next((a.id for a in spec.agencies
                               if "notice-authority" in a.roles), None)

    def members(self, group: str) -> list[str]:
        g = group[1:]
        if g == "ALL":
            return list(self.agencies)
        if g == "NCB":
            return [a for a, s in self.agencies.items() if s.kind == "ncb"]
        if g in self.spec.groups:
            return list(self.spec.groups[g])
        return [a for a, s in self.agencies.items() if s.region == g]


def network_spec(source: m.NetworkSource, seed: int = 0) -> NetworkSpec:
    """The parsed network spec of ``source`` (raises ``I24Error`` if it is unusable)."""
    return parse_spec(tomllib.loads(source.toml_text(seed)))


def _check(ex: m.Exercise, r: _Reader, explicit_duration: float | None) -> m.Exercise:
    try:
        spec = network_spec(ex.network)
    except FileNotFoundError:
        raise r.fail(("network", "spec"), f"no such file: {ex.network.spec}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise r.fail(("network", "spec"), f"cannot read {ex.network.spec}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise r.fail(("network", "spec"), f"{ex.network.spec}: {exc}") from None
    except I24Error as exc:
        raise r.fail(("network",), f"the network is invalid: {exc.message}") from None
    net = _Network(spec)

    def agency(path: tuple[Any, ...], a: str | None) -> None:
        if a is not None and a not in net.agencies:
            close = difflib.get_close_matches(a, list(net.agencies), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise r.fail(path, f"unknown agency {a} in network {spec.name}{hint}")

    operations: set[str] = set()  # joint operations created by the injects so far

    def targets(path: tuple[Any, ...], items: tuple[str, ...]) -> None:
        for t in items:
            if t.startswith("@"):
                if t[1:] not in net.groups and t[1:] not in operations:
                    raise r.fail(path, f"unknown group {t}; known: "
                                 + ", ".join("@" + g for g in sorted(
                                     {*net.groups, *operations})))
            else:
                agency(path, t)

    def label(path: tuple[Any, ...], marking: str | None) -> None:
        if marking is None:
            return
        lab = Label.parse(marking)
        if lab.level not in spec.scale.levels:
            raise r.fail(path, f"unknown level {lab.level}; network {spec.name} has "
                         + ", ".join(spec.scale.levels))
        known = spec.scale.caveats | operations
        bad = sorted(lab.caveats - known)
        if bad:
            raise r.fail(path, f"unknown caveat {bad[0]}; network {spec.name} has "
                         + ", ".join(sorted(known)) + (" (a joint operation's caveat is "
                                                       "known from its operation-create on)"))

    p: tuple[Any, ...]
    for rule in ex.conditions.links:
        p = ("conditions", "link", rule.index)
        agency((*p, "agency"), rule.agency)
        if rule.group:
            targets((*p, "group"), (rule.group,))
        for a in rule.between:
            agency((*p, "between"), a)
    for f in ex.conditions.filters:
        p = ("conditions", "filter", f.index)
        for key, value in (("sender", f.sender), ("to", f.to), ("to_group", f.to_group)):
            if value is not None:
                targets((*p, key), (value,))
        label((*p, "label"), f.label)
        if f.caveat is not None and f.caveat not in spec.scale.caveats:
            raise r.fail((*p, "caveat"), f"unknown caveat {f.caveat}")

    names: dict[str, m.Inject] = {}
    compromised: dict[str, float] = {}
    revoked: dict[str, float] = {}
    cancels: set[str] = set()
    for inj in sorted(ex.injects, key=lambda i: (i.at, i.index)):
        p = ("inject", inj.index)
        nm = getattr(inj, "name", "")
        if nm:
            if nm in names:
                raise r.fail((*p, "name"), f"name {nm!r} is already used by "
                             f"inject[{names[nm].index}]")
            names[nm] = inj
        if isinstance(inj, m.Send | m.NoticeRequest | m.Forward):
            agency((*p, "from"), inj.sender)
            label((*p, "label"), inj.label)
        if isinstance(inj, m.Send | m.Forward):
            targets((*p, "to"), inj.to)
        if isinstance(inj, m.Send) and inj.kind in ("notice", "notice-decision",
                                                    "notice-cancel", "notice-update"):
            pass  # the router refuses it for a non-GS sender: a legitimate drill
        if isinstance(inj, m.NoticeRequest) and net.authority is None:
            raise r.fail((*p, "action"), f"network {spec.name} has no notice authority")
        if isinstance(inj, m.Review | m.Cancel):
            ref = names.get(inj.notice)
            if not isinstance(ref, m.NoticeRequest):
                raise r.fail((*p, "notice"), f"{inj.notice!r} is not the name of an earlier "
                             "notice-request inject")
        if isinstance(inj, m.Review) and ex.network.review != "manual":
            raise r.fail((*p, "action"), "a review inject needs review = \"manual\" in "
                         "[network] (otherwise the GS publishes clean requests at once)")
        if isinstance(inj, m.Cancel):
            agency((*p, "by"), inj.by)
            cancels.add(inj.notice)
        if isinstance(inj, m.Forward):
            ref = names.get(inj.message)
            if not isinstance(ref, m.Send | m.Forward):
                raise r.fail((*p, "message"), f"{inj.message!r} is not the name of an "
                             "earlier send or forward inject")
        if isinstance(inj, m.Partition | m.Heal):
            targets((*p, "agencies"), inj.agencies)
        if isinstance(inj, m.Crash | m.Restart) and inj.who not in ("router", "broker"):
            agency((*p, "who"), inj.who)
        if isinstance(inj, m.Compromise):
            agency((*p, "agency"), inj.agency)
            targets((*p, "to"), inj.to)
            label((*p, "label"), inj.label)
            compromised.setdefault(inj.agency, inj.at)
        if isinstance(inj, m.Revoke | m.Rotate | m.Skew):
            agency((*p, "agency"), inj.agency)
        if isinstance(inj, m.RotatePrekeys):
            for a in inj.agencies:
                agency((*p, "agencies"), a)
        if isinstance(inj, m.Revoke):
            revoked.setdefault(inj.agency, inj.at)
        if isinstance(inj, m.OperationCreate):
            if inj.operation in operations or inj.operation in spec.scale.caveats \
                    or inj.operation in net.groups:
                raise r.fail((*p, "operation"), f"{inj.operation} is already a group, caveat "
                             "or operation of this network")
            agency((*p, "lead"), inj.lead)
            targets((*p, "members"), inj.members)
            if inj.level is not None and inj.level not in spec.scale.levels:
                raise r.fail((*p, "level"), f"unknown level {inj.level}; network "
                             f"{spec.name} has {', '.join(spec.scale.levels)}")
            if inj.until is not None and inj.until <= inj.at:
                raise r.fail((*p, "until"), "an operation ends after it is created")
            operations.add(inj.operation)
        if isinstance(inj, m.OperationAdd | m.OperationRemove | m.OperationClose) and \
                inj.operation not in operations:
            raise r.fail((*p, "operation"), f"no earlier operation-create inject creates "
                         f"{inj.operation}")
        if isinstance(inj, m.OperationAdd | m.OperationRemove):
            targets((*p, "agencies"), inj.agencies)
        if isinstance(inj, m.AgreementExpire) and inj.agreement not in spec.agreements:
            raise r.fail((*p, "agreement"), f"network {spec.name} has no agreement "
                         f"{inj.agreement}; agreements: "
                         f"{', '.join(sorted(spec.agreements)) or 'none'}")
        if ex.mode == "live" and not inj.live:
            raise r.fail((*p, "action"), f"not supported live: {inj.action}: "
                         f"{inj.why_not_live}" if inj.why_not_live
                         else f"not supported live yet: {inj.action}")
    c = ex.conditions
    if ex.mode == "live" and c.broker_queue_limit is not None:
        # the one condition a live run refuses (live.check_live says the same): filters,
        # links and partitions play through the fault proxies, router costs are virtual-only
        raise r.fail(("conditions", "broker_queue_limit"), "not supported live: the "
                     "embedded broker a live run uses (amqtt 0.12) has no per-session queue "
                     "limit; run it --virtual")

    messages = (m.Send, m.Forward, m.NoticeRequest, m.Compromise)
    for e in ex.expectations:
        p = ("expect", e.index)
        if isinstance(e, m.Delivered | m.Refused | m.Dropped):
            ref = names.get(e.message)
            if not isinstance(ref, messages):
                raise r.fail((*p, "message"), f"{e.message!r} is not the name of a message "
                             "some inject sends")
        if isinstance(e, m.Delivered | m.Dropped):
            targets((*p, "to"), e.to)
        if isinstance(e, m.NoLoss):
            for n in e.ignore:
                if n not in names:
                    raise r.fail((*p, "except"), f"{n!r} names no inject")
        if isinstance(e, m.CancelledEverywhere | m.Published) and \
                not isinstance(names.get(e.notice), m.NoticeRequest):
            raise r.fail((*p, "notice"), f"{e.notice!r} is not the name of a "
                         "notice-request inject")
        if isinstance(e, m.CancelledEverywhere) and e.notice not in cancels:
            raise r.fail((*p, "notice"), f"no cancel inject cancels {e.notice!r}")
        if isinstance(e, m.UnreadableToThief):
            agency((*p, "agency"), e.agency)
            if e.agency not in compromised:
                raise r.fail((*p, "agency"), f"no compromise inject steals {e.agency}'s key")
            for key, group in (("messages", e.messages), ("readable", e.readable)):
                for n in group:
                    if not isinstance(names.get(n), messages):
                        raise r.fail((*p, key), f"{n!r} is not the name of a message some "
                                     "inject sends")
        if isinstance(e, m.NothingAfterRevocation):
            agency((*p, "agency"), e.agency)
            if e.agency not in compromised:
                raise r.fail((*p, "agency"), f"no compromise inject steals {e.agency}'s key")
            if e.agency not in revoked:
                raise r.fail((*p, "agency"), f"no revoke inject revokes {e.agency}")

    last = max((i.at + _span(i) for i in ex.injects), default=0.0)
    duration = explicit_duration
    if duration is None:
        duration = last + DEFAULT_TAIL[ex.mode]
    elif duration < last:
        late = max(ex.injects, key=lambda i: i.at + _span(i))
        raise r.fail(("exercise", "duration"), f"ends at {duration:g}s, before inject"
                     f"[{late.index}] at {late.at:g}s")
    if duration <= 0:
        raise r.fail(("exercise", "duration"), "must be more than 0 seconds")
    return replace(ex, duration=duration)


def _span(i: m.Inject) -> float:
    """How long an inject goes on after ``at`` (a flood, an attacker's series)."""
    if isinstance(i, m.Send):
        return i.every * (i.repeat - 1)
    if isinstance(i, m.Compromise):
        return i.every * (i.count - 1)
    return 0.0


# -- entry points ---------------------------------------------------------------------------

def loads(text: str, *, source: str = "<exercise>", base: Path | None = None) -> m.Exercise:
    """Parse and check exercise TOML ``text``; ``base`` resolves ``network.spec``."""
    r = _Reader(text, source, base)
    if len(text) > MAX_FILE:
        raise ExerciseError(f"larger than {MAX_FILE} characters", source=source)
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = str(exc)
        where = re.search(r"\s*\(at line (\d+), column (\d+)\)$", msg)
        line = int(where.group(1)) if where else None
        if where:
            msg = msg[:where.start()] + f" at column {where.group(2)}"
        raise ExerciseError(f"TOML syntax: {msg}", source=source, line=line,
                            reason="exercise.syntax") from None
    except (RecursionError, ValueError) as exc:  # absurd nesting, a number tomllib rejects
        raise ExerciseError(f"TOML syntax: {type(exc).__name__}", source=source,
                            reason="exercise.syntax") from None
    exercise, duration = r.read(doc)
    return _check(exercise, r, duration)


def load(path: str | Path) -> m.Exercise:
    """Read and check the exercise file at ``path``."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except FileNotFoundError:
        raise ExerciseError("no such file", source=str(path), reason="exercise.file") from None
    except OSError as exc:
        raise ExerciseError(f"cannot read it: {exc.strerror}", source=str(path),
                            reason="exercise.file") from None
    if len(raw) > MAX_FILE:
        raise ExerciseError(f"larger than {MAX_FILE} bytes", source=str(path))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ExerciseError("not UTF-8 text", source=str(path), line=line,
                            reason="exercise.syntax") from None
    return loads(text, source=str(path), base=p.resolve().parent)
