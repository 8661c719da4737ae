"""Retention in virtual time: a diffusion past its period is gone from every recipient's
store (its id and dates stay, its body does not) and the history records each erasure;
an alert under a longer period, and a message under none, are still held."""

from __future__ import annotations

from i24net.config.presets import preset_toml
from i24net.sim import Purged, Simulation

from .support import assert_clean

DAY = 86_400.0
def _sim() -> Simulation:
    """The demo preset's rules (diffusions a year), alerts kept two years here."""
    text = preset_toml("demo")
    assert 'diffusion = "365d"' in text and 'alert = "90d"' in text
    return Simulation.from_toml(text.replace('alert = "90d"', 'alert = "730d"'), seed=3)


def test_a_diffusion_past_its_retention_is_gone_from_its_recipients() -> None:
    sim = _sim()
    dif = sim.send(1.0, "NCB-US", ["NCB-BR", "NCB-JP"], kind="diffusion",
                   label="RESTRICTED", subject="Wanted: suspect")
    alert = sim.send(2.0, "NCB-FR", ["NCB-DE"], kind="alert", label="RESTRICTED",
                     subject="Armed")
    message = sim.send(3.0, "NCB-FR", ["NCB-DE"], subject="Kept")
    h = sim.run(until=366 * DAY)
    purged = sorted((e.holder, e.msg_id) for e in h.of(Purged))
    holders = sim.messages[dif.msg_id].recipients
    assert purged == sorted((a, dif.msg_id) for a in holders)
    assert all(e.t >= 365 * DAY for e in h.of(Purged))
    for a in holders:
        [item] = [i for i in sim.inbox(a) if i.msg_id.hex() == dif.msg_id]
        assert (item.subject, item.text, item.data, item.state) == ("", "", {}, "purged")
    held = {i.msg_id.hex(): i for i in sim.inbox("NCB-DE")}
    assert held[alert.msg_id].subject == "Armed" and held[message.msg_id].subject == "Kept"
    assert_clean(h)
