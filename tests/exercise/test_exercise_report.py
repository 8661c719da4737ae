"""The HTML after-action report: self-contained, escaped, and it renders in a real browser
(headless Chromium from Debian) with all four charts present."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from i24net.exercise import load, loads, render_html, run

from .support import EXAMPLES, MINIMAL

CHROMIUM = "/usr/bin/chromium"
CHARTS = ("latency", "timeline", "refusals", "agencies")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync")


@pytest.fixture(scope="module")
def report_html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    result = run(load(EXAMPLES / "stolen_key.toml"))
    path = tmp_path_factory.mktemp("report") / "aar.html"
    path.write_text(render_html(result))
    return path


def test_report_is_self_contained(report_html: Path) -> None:
    html = report_html.read_text()
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    for chart in CHARTS:
        assert f'data-chart="{chart}"' in html
    # the service targets are drawn on the latency chart
    assert html.count('class="target"') == 4
    assert "FLASH target: 10.0 min" in html and "ROUTINE target: 6.0 h" in html


def test_report_escapes_what_the_file_says() -> None:
    text = MINIMAL.replace('name = "minimal"', 'name = "<script>alert(1)</script>"')
    text = text.replace('name = "m1"', 'name = "m1"\nsubject = "</title><b>x"\n'
                        'note = "<img src=x onerror=alert(1)>"')
    html = render_html(run(loads(text)))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason=f"{CHROMIUM} not installed (Debian: apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(report_html: Path, tmp_path: Path) -> None:
    profile = tmp_path / "profile"
    url = report_html.resolve().as_uri()
    dom = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                          "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    out = dom.stdout
    # the browser parsed the SVG into elements: each chart with its marks
    for chart in CHARTS:
        m = re.search(rf'<svg data-chart="{chart}"[^>]*>(.*?)</svg>', out, re.S)
        assert m, f"chart {chart} missing from the rendered DOM"
        assert re.search(r"<(circle|rect|path|line)\b", m.group(1)), chart
    latency = re.search(r'<svg data-chart="latency".*?</svg>', out, re.S).group(0)
    assert latency.count('class="dot"') >= 20  # FLASH forgeries and the routine mail
    assert 'class="refused"' in out  # refusals drawn on the timeline
    shot = tmp_path / "aar.png"
    run_shot = subprocess.run([CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                               "--window-size=1200,2400", f"--screenshot={shot}", url],
                              capture_output=True, text=True, timeout=120)
    assert run_shot.returncode == 0, run_shot.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # not a blank page
    shutil.rmtree(profile, ignore_errors=True)


def test_the_joint_debriefing_counts_an_operations_traffic_by_sender() -> None:
    result = run(load(EXAMPLES / "joint_operation.toml"))
    op = result.to_dict()["operations"]["TRIDENT"]
    assert (op["lead"], op["created_t"], op["removed"], op["closed_t"]) == (
        "NCB-FR", 1.0, {"NCB-US": 14.0}, 40.0)
    assert op["members"] == ["EUROPOL", "NCB-DE", "NCB-FR", "NCB-US"]
    # NCB-FR: lead, after-removal, to-removed, after-expiry, interpol-only, after-close
    fr = op["by_sender"]["NCB-FR"]
    assert (fr["sent"], fr["refused"], fr["deliveries"]) == (6, 3, 6)
    assert op["by_sender"]["EUROPOL"]["deliveries"] == 3
    assert op["refusals"] == {"agreement.expired": 1, "agreement.handling": 1,
                              "clearance.recipient": 1, "operation.closed": 1}
    assert op["deliveries"] == sum(r["deliveries"] for r in op["by_sender"].values())
    assert 0 < op["p50_s"] <= op["max_s"]
    html = render_html(result)
    assert "Joint debriefing: operation TRIDENT" in html and "NCB-US left at" in html
    assert run(loads(MINIMAL)).to_dict()["operations"] == {}
