"""The after-action report as one self-contained HTML file with inline SVG charts.

Theory of operation: ``render(result)`` returns a complete HTML document: a stylesheet in
a ``<style>`` element, tables, and four SVG charts drawn here with nothing but arithmetic
(no JavaScript, no external file, no font download), so it opens the same way from a mail
attachment, an air-gapped laptop or a CI artefact:

- latency by precedence on a log scale, every delivery a dot, the median-to-p95 box, and
  the precedence's service target as a dashed line (FLASH 10 min ... ROUTINE 6 h);
- a timeline: injects on top, then one lane per precedence with each message drawn from
  its submission to its last delivery (refusals as crosses);
- refusals by reason and deliveries per agency as bar charts.

Every text that comes from the exercise file or the run is escaped. Hovering a mark shows
its ``<title>``. Each chart is an ``<svg>`` with a ``data-chart`` attribute the tests look for.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any

from i24net.core.units import clock, duration
from i24net.exercise.result import PRECEDENCES, TARGETS, Result

COLOURS = {"FLASH": "#d62728", "IMMEDIATE": "#ff7f0e", "PRIORITY": "#b8a000",
           "ROUTINE": "#1f77b4"}
OK, FAIL, MUTED, GRID = "#2ca02c", "#d62728", "#6b7280", "#e5e7eb"
FONT = "font-family:system-ui,-apple-system,'Segoe UI',Roboto,'DejaVu Sans',sans-serif"
# Dots per precedence row in the latency chart: beyond this an even sample is drawn (the
# box and the figures still use every value), so a 100,000-message flood stays light.
MAX_DOTS = 1500

CSS = f"""
body{{{FONT};margin:0;background:#f8fafc;color:#111827}}
main{{max-width:1080px;margin:0 auto;padding:24px}}
h1{{font-size:24px;margin:0 0 4px}} h2{{font-size:18px;margin:28px 0 8px}}
.sub{{color:#4b5563;margin:0 0 16px}}
.verdict{{display:inline-block;padding:4px 12px;border-radius:6px;color:#fff;font-weight:600}}
.pass{{background:{OK}}}.fail{{background:{FAIL}}}
.cards{{display:flex;flex-wrap:wrap;gap:12px;margin:16px 0}}
.card{{background:#fff;border:1px solid {GRID};border-radius:8px;padding:10px 14px;min-width:110px}}
.card b{{display:block;font-size:22px}}.card span{{color:#4b5563;font-size:13px}}
table{{border-collapse:collapse;width:100%;background:#fff;font-size:14px}}
th,td{{border-bottom:1px solid {GRID};padding:6px 8px;text-align:left;vertical-align:top}}
th{{background:#f1f5f9}}td.num{{text-align:right;font-variant-numeric:tabular-nums}}
.ok{{color:{OK};font-weight:600}}.bad{{color:{FAIL};font-weight:600}}
figure{{background:#fff;border:1px solid {GRID};border-radius:8px;margin:12px 0;padding:8px}}
figcaption{{color:#4b5563;font-size:13px;padding:4px 8px}}
svg{{display:block;max-width:100%;height:auto}}
footer{{color:#6b7280;font-size:12px;margin-top:32px}}
"""


def _n(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


def _svg(chart: str, w: int, h: int, body: list[str], label: str) -> str:
    return (f'<svg data-chart="{chart}" class="chart" xmlns="http://www.w3.org/2000/svg" '
            f'width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="{escape(label)}" style="{FONT};font-size:12px">'
            + "".join(body) + "</svg>")


def _text(x: float, y: float, s: str, anchor: str = "start", size: int = 12,
          fill: str = "#111827", extra: str = "") -> str:
    return (f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{size}" '
            f'fill="{fill}"{extra}>{escape(s)}</text>')


def _spread(i: int, n: int) -> float:
    """A deterministic vertical jitter in [-0.5, 0.5) (golden-ratio sequence)."""
    return ((i * 0.6180339887) % 1.0) - 0.5 if n > 1 else 0.0


def _sample(values: list[float], k: int) -> list[float]:
    if len(values) <= k:
        return values
    step = len(values) / k
    return [values[int(i * step)] for i in range(k)]


# -- charts -------------------------------------------------------------------------------

def latency_chart(result: Result) -> str:
    lat = result.latencies()
    stats = result.latency_by_precedence()
    w, left, right, top, row_h = 960, 190, 30, 30, 64
    h = top + row_h * len(PRECEDENCES) + 50
    everything = [v for vs in lat.values() for v in vs] + list(TARGETS.values())
    lo = min([v for v in everything if v > 0] + [0.01])
    lo = 10 ** math.floor(math.log10(max(lo, 0.001)))
    hi = 10 ** math.ceil(math.log10(max(everything) * 1.5))
    span = math.log10(hi) - math.log10(lo)

    def x(v: float) -> float:
        v = min(max(v, lo), hi)
        return left + (w - left - right) * (math.log10(v) - math.log10(lo)) / span

    body = [f'<rect width="{w}" height="{h}" fill="#fff"/>']
    ticks = [(0.001, "1 ms"), (0.01, "10 ms"), (0.1, "100 ms"), (1, "1 s"), (10, "10 s"),
             (60, "1 min"), (600, "10 min"), (3600, "1 h"), (6 * 3600, "6 h"),
             (86400, "1 day"), (7 * 86400, "1 week")]
    bottom = top + row_h * len(PRECEDENCES)
    for v, name in ticks:
        if lo <= v <= hi:
            body.append(f'<line x1="{_n(x(v))}" y1="{top}" x2="{_n(x(v))}" y2="{bottom}" '
                        f'stroke="{GRID}"/>')
            body.append(_text(x(v), bottom + 16, name, "middle", 11, MUTED))
    body.append(_text((left + w - right) / 2, bottom + 36, "delivery latency (log scale); "
                      "dashed line: service target", "middle", 12, MUTED))
    for row, p in enumerate(PRECEDENCES):
        y0 = top + row * row_h
        mid = y0 + row_h / 2
        colour = COLOURS[p]
        values = sorted(lat[p])
        s = stats[p]
        body.append(f'<line x1="{left}" y1="{_n(y0 + row_h)}" x2="{w - right}" '
                    f'y2="{_n(y0 + row_h)}" stroke="{GRID}"/>')
        body.append(_text(left - 10, mid - 4, p, "end", 13, colour, ' font-weight="600"'))
        body.append(_text(left - 10, mid + 12, f"n={s['count']}  target {duration(TARGETS[p])}",
                          "end", 11, MUTED))
        tx = x(TARGETS[p])
        body.append(f'<line class="target" x1="{_n(tx)}" y1="{_n(y0 + 4)}" x2="{_n(tx)}" '
                    f'y2="{_n(y0 + row_h - 4)}" stroke="{colour}" stroke-width="2" '
                    f'stroke-dasharray="5,4"><title>{p} target: {duration(TARGETS[p])}</title>'
                    '</line>')
        if not values:
            body.append(_text(left + 8, mid + 4, "no delivery", "start", 11, MUTED))
            continue
        p50, p95 = s["p50_s"], s["p95_s"]
        body.append(f'<rect class="box" x="{_n(x(p50))}" y="{_n(mid - 12)}" '
                    f'width="{_n(max(2.0, x(p95) - x(p50)))}" height="24" fill="{colour}" '
                    f'fill-opacity="0.15" stroke="{colour}"><title>{p}: median '
                    f'{duration(p50)}, p95 {duration(p95)}, '
                    f'max {duration(s["max_s"])}</title></rect>')
        body.append(f'<line x1="{_n(x(p50))}" y1="{_n(mid - 12)}" x2="{_n(x(p50))}" '
                    f'y2="{_n(mid + 12)}" stroke="{colour}" stroke-width="3"/>')
        shown = _sample(values, MAX_DOTS)
        for i, v in enumerate(shown):
            cy = mid + _spread(i, len(shown)) * (row_h - 20)
            body.append(f'<circle class="dot" cx="{_n(x(v))}" cy="{_n(cy)}" r="3" '
                        f'fill="{colour}" fill-opacity="0.7"><title>{duration(v)}</title></circle>')
        late = len(values) - s.get("within_target", 0)
        note = f"max {duration(s['max_s'])}" + (f", {late} over target" if late else "")
        body.append(_text(w - right, y0 + 14, note, "end", 11, FAIL if late else MUTED))
    return _svg("latency", w, h, body, "delivery latency by precedence against targets")


def timeline_chart(result: Result) -> str:
    obs = result.obs
    duration = max(obs.duration, 1.0)
    w, left, right, top = 960, 110, 20, 20
    inject_h, lane_h = 96, 44
    h = top + inject_h + lane_h * len(PRECEDENCES) + 44
    plot_w = w - left - right

    def x(t: float) -> float:
        return left + plot_w * min(max(t, 0.0), duration) / duration

    body = [f'<rect width="{w}" height="{h}" fill="#fff"/>']
    bottom = h - 44
    step = _nice_step(duration / 8)
    t = 0.0
    while t <= duration + 1e-9:
        body.append(f'<line x1="{_n(x(t))}" y1="{top}" x2="{_n(x(t))}" y2="{bottom}" '
                    f'stroke="{GRID}"/>')
        body.append(_text(x(t), bottom + 16, clock(t), "middle", 11, MUTED))
        t += step
    body.append(_text(left + plot_w / 2, bottom + 34, f"exercise time ({result.mode})",
                      "middle", 12, MUTED))
    body.append(_text(left - 10, top + 16, "injects", "end", 13, "#111827",
                      ' font-weight="600"'))
    for k, i in enumerate(sorted(obs.injects, key=lambda i: (i.t, i.index))):
        cx, cy = x(i.t), top + 12.0 + (k % 4) * 20
        colour = "#7c3aed" if i.ok else FAIL
        body.append(f'<path class="inject" d="M{_n(cx)},{_n(cy - 6)} l6,6 l-6,6 l-6,-6 z" '
                    f'fill="{colour}"><title>{escape(clock(i.t))} inject[{i.index}] '
                    f'{escape(i.text)}{escape(" — " + i.detail) if i.detail else ""}'
                    '</title></path>')
        body.append(f'<line x1="{_n(cx)}" y1="{_n(cy + 6)}" x2="{_n(cx)}" '
                    f'y2="{top + inject_h}" stroke="#7c3aed" stroke-opacity="0.25"/>')
        label = i.action if len(i.text) > 28 else i.text
        body.append(_text(cx + 9, cy + 4, label, "start", 11, colour))
    msgs = sorted(obs.messages, key=lambda m: (m.sent, m.id))[:4000]
    for row, p in enumerate(PRECEDENCES):
        y0 = top + inject_h + row * lane_h
        mid = y0 + lane_h / 2
        colour = COLOURS[p]
        body.append(f'<line x1="{left}" y1="{_n(y0)}" x2="{w - right}" y2="{_n(y0)}" '
                    f'stroke="{GRID}"/>')
        body.append(_text(left - 10, mid + 4, p, "end", 12, colour, ' font-weight="600"'))
        lane = [m for m in msgs if m.precedence == p]
        for j, msg in enumerate(lane):
            cy = mid + _spread(j, len(lane)) * (lane_h - 12)
            tip = (f"{clock(msg.sent)} {msg.name or msg.kind} {msg.sender} → "
                   f"{len(msg.recipients)} recipient(s): {msg.state}"
                   + (f" ({msg.reason})" if msg.reason else ""))
            if msg.state == "refused":
                cx = x(msg.sent)
                body.append(f'<path class="refused" d="M{_n(cx - 4)},{_n(cy - 4)} l8,8 '
                            f'M{_n(cx + 4)},{_n(cy - 4)} l-8,8" stroke="{FAIL}" '
                            f'stroke-width="2"><title>{escape(tip)}</title></path>')
                continue
            end = max(msg.delivered.values(), default=None)
            missing = len(msg.delivered) < len(msg.recipients)
            if end is not None:
                body.append(f'<line class="span" x1="{_n(x(msg.sent))}" y1="{_n(cy)}" '
                            f'x2="{_n(max(x(end), x(msg.sent) + 1))}" y2="{_n(cy)}" '
                            f'stroke="{colour}" stroke-opacity="0.55" stroke-width="2"/>')
            if missing:
                stop = x(end if end is not None else msg.sent)
                body.append(f'<line x1="{_n(stop)}" y1="{_n(cy)}" x2="{_n(x(duration))}" '
                            f'y2="{_n(cy)}" stroke="{MUTED}" stroke-dasharray="2,3"/>')
            body.append(f'<circle class="msg" cx="{_n(x(msg.sent))}" cy="{_n(cy)}" r="3.5" '
                        f'fill="{colour}"><title>{escape(tip)}</title></circle>')
    return _svg("timeline", w, h, body, "timeline of injects and messages")


def _nice_ceiling(x: float) -> float:
    """The smallest of 1, 2, 2.5, 4, 5 x 10^k at least ``x``: round axis ends and halves."""
    scale = 10.0 ** math.floor(math.log10(x))
    for f in (1.0, 2.0, 2.5, 4.0, 5.0):
        if f * scale >= x:
            return f * scale
    return 10.0 * scale


def _nice_step(raw: float) -> float:
    for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
              21600, 43200, 86400):
        if s >= raw:
            return float(s)
    return 86400.0 * math.ceil(raw / 86400)


def bar_chart(chart: str, title: str, rows: list[tuple[str, float, str]],
              empty: str) -> str:
    """Horizontal bars: (label, value, colour)."""
    w, left, right, top, bar_h = 960, 280, 60, 12, 24
    h = top + max(1, len(rows)) * bar_h + 16
    body = [f'<rect width="{w}" height="{h}" fill="#fff"/>']
    if not rows:
        body.append(_text(w / 2, top + 16, empty, "middle", 13, MUTED))
        return _svg(chart, w, h, body, title)
    most = max(v for _, v, _ in rows) or 1.0
    for i, (name, v, colour) in enumerate(rows):
        y = top + i * bar_h
        bw = (w - left - right) * v / most
        body.append(_text(left - 8, y + 16, name, "end", 12))
        body.append(f'<rect class="bar" x="{left}" y="{_n(y + 4)}" width="{_n(max(bw, 1))}" '
                    f'height="{bar_h - 8}" fill="{colour}"><title>{escape(name)}: '
                    f'{_n(v)}</title></rect>')
        body.append(_text(left + bw + 6, y + 16, _n(v), "start", 12, MUTED))
    return _svg(chart, w, h, body, title)


def agency_chart(result: Result) -> str:
    """Deliveries per agency: vertical bars (delivered solid, still pending hatched)."""
    rows = result.per_agency()
    names = list(rows)
    w, left, right, top = 960, 50, 20, 16
    many = len(names) > 40
    bottom_pad = 24 if many else 92
    plot_h = 180
    h = top + plot_h + bottom_pad
    body = [f'<rect width="{w}" height="{h}" fill="#fff"/>']
    if not names:
        body.append(_text(w / 2, top + 20, "no agency", "middle", 13, MUTED))
        return _svg("agencies", w, h, body, "deliveries per agency")
    most = _nice_ceiling(max(max(r["delivered"] + r["pending"] for r in rows.values()), 1))
    slot = (w - left - right) / len(names)
    bw = max(1.0, slot * 0.75)
    base = top + plot_h
    for frac in (0.0, 0.5, 1.0):
        y = base - plot_h * frac
        body.append(f'<line x1="{left}" y1="{_n(y)}" x2="{w - right}" y2="{_n(y)}" '
                    f'stroke="{GRID}"/>')
        body.append(_text(left - 6, y + 4, _n(most * frac), "end", 11, MUTED))
    for i, a in enumerate(names):
        r = rows[a]
        x0 = left + i * slot + (slot - bw) / 2
        dh = plot_h * r["delivered"] / most
        ph = plot_h * r["pending"] / most
        tip = f"{a}: {r['delivered']} delivered, {r['pending']} pending, sent {r['sent']}" \
            f" ({r['refused']} refused)"
        body.append(f'<rect class="bar" x="{_n(x0)}" y="{_n(base - dh)}" width="{_n(bw)}" '
                    f'height="{_n(max(dh, 0.5))}" fill="{OK}"><title>{escape(tip)}</title>'
                    '</rect>')
        if ph:
            body.append(f'<rect x="{_n(x0)}" y="{_n(base - dh - ph)}" width="{_n(bw)}" '
                        f'height="{_n(ph)}" fill="{FAIL}" fill-opacity="0.5">'
                        f'<title>{escape(tip)}</title></rect>')
        if not many:
            cx, cy = x0 + bw / 2, base + 10
            body.append(f'<text x="{_n(cx)}" y="{_n(cy)}" font-size="11" fill="#111827" '
                        f'text-anchor="end" transform="rotate(-45 {_n(cx)} {_n(cy)})">'
                        f'{escape(a)}</text>')
    if many:
        body.append(_text(left + (w - left - right) / 2, base + 18,
                          f"{len(names)} agencies (hover a bar for its name)", "middle", 11,
                          MUTED))
    return _svg("agencies", w, h, body, "deliveries per agency")


# -- the page -----------------------------------------------------------------------------

def _table(head: list[str], rows: list[list[str]], num: set[int] | None = None) -> str:
    num = num or set()
    out = ["<table><thead><tr>", *[f"<th>{escape(h)}</th>" for h in head], "</tr></thead>",
           "<tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(f'<td class="num">{c}</td>' if i in num else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def render(result: Result) -> str:
    d: dict[str, Any] = result.to_dict()
    ex, summary = d["exercise"], d["summary"]
    verdict = ('<span class="verdict pass">PASSED</span>' if result.passed else
               '<span class="verdict fail">FAILED</span>')
    cards = [("expectations met", f"{summary['met']}/{summary['expectations']}"),
             ("messages", summary["messages"]), ("deliveries", summary["deliveries"]),
             ("refused", summary["refused"]), ("dropped frames", summary["dropped_frames"]),
             ("flow violations", summary["flowcheck_violations"]),
             ("injects", summary["injects"])]
    if "lateness" in d:  # live: how far the plan's clock slipped
        cards.append(("worst inject lateness", duration(d["lateness"]["worst_s"])))
    if d.get("settle", {}).get("pending"):
        cards.append(("not final at the end", d["settle"]["pending"]))
    expectations = _table(
        ["#", "expectation", "result", "detail", "measured"],
        [[str(o["index"]), escape(o["description"]),
          '<span class="ok">met</span>' if o["passed"] else '<span class="bad">FAILED</span>',
          escape(o["detail"]), escape(duration(o["measured_s"])) if o["measured_s"] is not None
          else ""] for o in d["expectations"]], {4})
    lat_rows = []
    for p, s in d["latency_by_precedence"].items():
        lat_rows.append([f'<span style="color:{COLOURS[p]};font-weight:600">{p}</span>',
                         str(s["count"]), duration(s["target_s"]),
                         duration(s["p50_s"]) if s["count"] else "-",
                         duration(s["p95_s"]) if s["count"] else "-",
                         duration(s["max_s"]) if s["count"] else "-",
                         f"{s['within_target']}/{s['count']}" if s["count"] else "-"])
    latency_table = _table(["precedence", "deliveries", "target", "median", "p95", "max",
                            "within target"], lat_rows, {1, 3, 4, 5, 6})
    refusal_rows = [(r, float(n), FAIL) for r, n in d["refusals"].items()]
    refusal_rows += [(f"{r} (dropped)", float(n), "#9333ea") for r, n in d["drops"].items()]
    notices = ""
    if d["notices"]:
        notices = "<h2>Notices</h2>" + _table(
            ["name", "requester", "decision", "number", "holders", "withdrawn",
             "time-to-withdraw"],
            [[escape(n), escape(v["requester"]), escape(v["decision"] + (
                f" ({v['reason']})" if v["reason"] else "")), escape(v["number"]),
              f"{v['holders']}/{v['audience']}", str(v["withdrawn"]),
              duration(v["time_to_withdraw_s"]) if v["time_to_withdraw_s"] is not None else ""]
             for n, v in d["notices"].items()], {4, 5, 6})
    operations = ""
    for name, op in d["operations"].items():
        changes = [f"{escape(a)} left at {duration(when)}" for a, when in op["removed"].items()]
        changes += [f"{escape(a)} joined at {duration(when)}"
                    for a, when in op["joined"].items()]
        if op["closed_t"] is not None:
            changes.append(f"closed at {duration(op['closed_t'])}")
        refused = ", ".join(f"{escape(r)} &times;{n}" for r, n in op["refusals"].items())
        operations += (
            f"<h2>Joint debriefing: operation {escape(name)}</h2>"
            f"<p>{escape(op['title'])}. Lead {escape(op['lead'])}; members "
            f"{escape(', '.join(op['members']))}"
            + (f"; {'; '.join(changes)}" if changes else "") + ". "
            f"{op['messages']} message(s), {op['deliveries']} deliveries"
            + (f", median {duration(op['p50_s'])}" if op["p50_s"] is not None else "")
            + (f"; refused: {refused}" if refused else "") + ".</p>"
            + _table(["sender", "sent", "refused", "deliveries", "median", "max"],
                     [[escape(a), str(r["sent"]), str(r["refused"]), str(r["deliveries"]),
                       duration(r["p50_s"]) if r["p50_s"] is not None else "-",
                       duration(r["max_s"]) if r["max_s"] is not None else "-"]
                      for a, r in op["by_sender"].items()], {1, 2, 3, 4, 5}))
    violations = d["flowcheck"]["violations"]
    if not d["flowcheck"]["ran"]:
        flow = "<p>The information-flow checker did not run in this mode.</p>"
    elif not violations:
        flow = '<p class="ok">No violation: every delivery was addressed, cleared and ' \
            'honoured its handling codes.</p>'
    else:
        flow = _table(["#", "violation"], [[str(i + 1), escape(str(v))]
                                           for i, v in enumerate(violations[:200])])
    injects = _table(["time", "#", "action", "what", "result"],
                     [[clock(t["t"]), str(t["index"]), escape(t["action"]), escape(t["text"]),
                       '<span class="bad">' + escape(t["error"]) + "</span>" if "error" in t
                       else '<span class="ok">played</span>']
                      for t in d["timeline"] if t["type"] == "inject"])
    desc = f'<p class="sub">{escape(ex["description"])}</p>' if ex["description"] else ""
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(ex['name'])}: after-action report</title>",
        f"<style>{CSS}</style></head><body><main>",
        f"<h1>{escape(ex['name'])} {verdict}</h1>", desc,
        f'<p class="sub">{escape(ex["network"])}, {ex["agencies"]} agencies · '
        f'{escape(ex["mode"])} mode · seed {ex["seed"]} · '
        f'{clock(ex["duration_s"] or 0)} of exercise time planned'
        + (f', judged at {clock(ex["ended_s"])}' if ex["ended_s"] != ex["duration_s"]
           else "")
        + (f" · {escape(ex['file'])}" if ex["file"] else "") + "</p>",
        '<div class="cards">' + "".join(f"<div class=\"card\"><b>{escape(str(v))}</b>"
                                        f"<span>{escape(k)}</span></div>"
                                        for k, v in cards) + "</div>",
        "<h2>Expectations</h2>", expectations,
        "<h2>Delivery latency by precedence</h2>",
        f"<figure>{latency_chart(result)}<figcaption>Each dot is one delivery; the box runs "
        "from the median to the 95th percentile; the dashed line is the precedence's "
        "service target (ACP 121: FLASH 10 min, IMMEDIATE 30 min, PRIORITY 3 h, ROUTINE "
        "6 h).</figcaption></figure>", latency_table,
        "<h2>Timeline</h2>",
        f"<figure>{timeline_chart(result)}<figcaption>Injects on top; below, each message "
        "from its submission (dot) to its last delivery (line); a dotted tail means some "
        "recipient never got it; a cross is a refusal.</figcaption></figure>",
        "<h2>Refusals and drops by reason</h2>",
        "<figure>" + bar_chart("refusals", "refusals by reason", refusal_rows,
                               "no refusal and no drop")
        + "<figcaption>Refused by the router, by a recipient or by the GS review; drops "
          "are frames a daemon discarded (forged, malformed, replayed).</figcaption>"
          "</figure>",
        "<h2>Deliveries per agency</h2>",
        f"<figure>{agency_chart(result)}<figcaption>Green: messages delivered to the "
        "agency; red: accepted for it but not delivered by the end.</figcaption></figure>",
        notices,
        operations,
        "<h2>Information flow</h2>", flow,
        "<h2>Injects</h2>", injects,
        "<footer>Generated by i24net exercise. Self-contained: no script, no external "
        "resource.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(p for p in parts if p) + "\n"
