"""Hole 7 of issue 11 at the containers' end: from a mediated instance with
no rules, a hidden name and a missing one get the same answer after the
same work in containers/access.py (the same rule lookups, and one lookup
of the name either way), for calls and for the driver's lookups."""

import pytest

from containerhelpers import make_container_bus
from corehelpers import ERROR, METHOD_RETURN

SVC = "com.example.Svc"
MISSING_SVC = "com.example.Nop"  # as long as SVC: the answers' bytes compare


class Counting:
    """Counts the calls of some AccessControl methods and bus lookups."""

    def __init__(self, access, monkeypatch):
        self.calls = []
        for name in ("_rules_for", "_shows_names_of", "_note", "_sight"):
            fn = getattr(access, name)
            monkeypatch.setattr(access, name, self._wrap(name, fn))

    def _wrap(self, name, fn):
        def counted(*args, **kw):
            self.calls.append(name)
            return fn(*args, **kw)
        return counted


@pytest.fixture
def world(monkeypatch):
    cb = make_container_bus()
    outside = cb.client()
    assert outside.bus_ok("RequestName", "su", (SVC, 4)) == [1]
    inst = cb.add_server(cb.client(), [])
    app = cb.join(inst)
    app.clear()
    outside.clear()
    return cb, app, outside, Counting(cb.access, monkeypatch)


def _names(outside, unique):
    """(a hidden name, a missing one of the same length)."""
    if not unique:
        return SVC, MISSING_SVC
    prefix, _, number = outside.unique_name.rpartition(".")
    return outside.unique_name, prefix + "." + "9" * len(number)


def _answer(app, serial):
    m = app.reply_to(serial)
    return m.type, m.error_name, [v if not isinstance(v, str) else v.replace(m.destination, "ME")
                                  for v in m.body()]


@pytest.mark.parametrize("unique", [True, False])
def test_call_to_a_hidden_name_costs_what_a_missing_one_does(world, unique):
    cb, app, outside, counting = world
    hidden, missing = _names(outside, unique)
    seen = {}
    for dest in (hidden, missing):
        counting.calls.clear()
        serial = app.call(dest, "M", path="/x", interface="com.example.X")
        answer = _answer(app, serial)
        assert answer[0] == ERROR and answer[1].endswith("ServiceUnknown")
        seen[dest] = (answer[2][0].replace(dest, "NAME"), list(counting.calls))
    assert seen[hidden] == seen[missing]
    assert outside.received() == []


@pytest.mark.parametrize("unique", [True, False])
def test_name_has_owner_of_a_hidden_name_costs_what_a_missing_one_does(world, unique):
    cb, app, outside, counting = world
    hidden, missing = _names(outside, unique)
    seen = {}
    for dest in (hidden, missing):
        counting.calls.clear()
        serial = app.driver("NameHasOwner", "s", (dest,))
        m = app.reply_to(serial)
        assert m.type == METHOD_RETURN and m.body() == [False]
        seen[dest] = list(counting.calls)
    assert seen[hidden] == seen[missing]
    assert "_sight" in seen[hidden]
