"""The button: chatter is one press, the chime pulses once, the cooldown holds."""

from gpiozero.pins.mock import MockFactory

from firmware.clock import SimClock
from firmware.config import GpioConfig
from firmware.events import ButtonEdge
from firmware.gpio import DoorbellIO
from hw_sim.bounce import bounce_edges, press


def chime_pulses(pin) -> int:
    return sum(1 for s in pin.states[1:] if s.state)


def test_mock_pin_sees_the_chatter():
    """The bounce helper really produces several edges per press (gpiozero mock pins are clean)."""
    factory = MockFactory()
    clock = SimClock()
    edges: list = []
    io = DoorbellIO(GpioConfig(), edges.append, clock, pin_factory=factory)
    press(factory.pin(17), clock.set, at=1.0, bounces=4, seed=3)
    assert len(edges) > 4
    assert all(isinstance(e, ButtonEdge) for e in edges)
    assert edges[0].pressed and not edges[-1].pressed
    io.close()
    factory.close()


def test_bounce_edges_settle():
    edges = list(bounce_edges(at=2.0, hold_s=0.3, bounces=5, seed=1))
    times = [t for t, _ in edges]
    assert times == sorted(times)
    assert edges[0] == (2.0, False)  # active low: pressed pulls the pin down
    assert edges[-1][1] is True
    assert max(times) < 2.0 + 0.3 + 0.005


def test_bouncing_press_rings_once_and_pulses_chime_once(make_bell, recorder):
    bell = make_bell("porch")
    bell.schedule_press(1.0, bounces=6)
    bell.run(3.0)
    assert recorder.kinds().count("ring") == 1
    assert chime_pulses(bell.chime_pin) == 1
    assert bell.controller.counters["edges"] > 6
    assert not bell.io.chime.value, "the chime pulse ended"


def test_ring_is_emitted_at_the_press_time(make_bell, recorder):
    bell = make_bell("porch")
    bell.schedule_press(1.23)
    bell.run(2.0)
    (ring,) = recorder.of("ring")
    assert ring.t == 1.23
    assert recorder.kinds().index("ring") == 0, "the ring goes out before anything else"


def test_cooldown_stops_a_hammered_button(make_bell, recorder):
    bell = make_bell("porch", gpio={"ring_cooldown_s": 5.0})
    for i in range(10):  # ten presses in 3 s
        bell.schedule_press(1.0 + 0.3 * i, hold_s=0.1)
    bell.schedule_press(7.0)  # after the cooldown: rings again
    bell.run(9.0)
    rings = recorder.of("ring")
    assert [r.t for r in rings] == [1.0, 7.0]
    assert chime_pulses(bell.chime_pin) == 2
    assert bell.controller.counters["presses_cooled_down"] == 9


def test_held_button_rings_once(make_bell, recorder):
    bell = make_bell("porch", gpio={"ring_cooldown_s": 1.0})
    bell.schedule_press(1.0, hold_s=6.0)
    bell.run(8.0)
    assert len(recorder.of("ring")) == 1
