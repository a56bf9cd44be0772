"""Method-level rules (EXACT_MEMBER), the unique-names rule (--sloppy-names)
and LogDenials, through Bus.receive without sockets."""

import logging

from containerhelpers import make_container_bus
from corehelpers import ERR

from sandbus.containers.rules import (
    BUS_NAME_IS_SUBTREE as NAME_TREE,
    CALL_METHODS as CALL,
    EXACT_MEMBER as EXACT,
    OBJECT_PATH_IS_SUBTREE as PATH_TREE,
    RECEIVE_BROADCASTS as RECV,
)
from sandbus.wire.marshal import Variant
from sandbus.wire.message import ERROR, METHOD_CALL, METHOD_RETURN, SIGNAL

SVC = "org.example.Svc"
IFACE = "org.example.Svc.Iface"


def _world(rules, **named):
    cb = make_container_bus()
    svc = cb.client()
    svc.bus_ok("RequestName", "su", (SVC, 4))
    inst = cb.add_server(cb.client(), rules, name="org.example.App", **named)
    app = cb.join(inst)
    return cb.bus, cb.manager, svc, app


def _call(app, svc, member, path="/obj", interface=IFACE):
    """'delivered' if svc got it (it answers), else the error app got."""
    serial = app.call(SVC, member, path=path, interface=interface)
    got = [m for m in svc.received() if m.type == METHOD_CALL and m.member == member]
    if got:
        svc.reply(got[0])
        assert app.reply_to(serial).type == METHOD_RETURN
        return "delivered"
    r = app.reply_to(serial)
    assert r.type == ERROR
    return r.error_name


def test_a_method_rule_allows_that_method_and_no_other_of_its_interface():
    bus, mgr, svc, app = _world([(CALL | EXACT, SVC, "/obj", f"{IFACE}.Get")])
    assert _call(app, svc, "Get") == "delivered"
    assert _call(app, svc, "Delete") == ERR + "AccessDenied"
    assert _call(app, svc, "Get", path="/other") == ERR + "AccessDenied"
    assert _call(app, svc, "Get", interface="org.example.Svc.Other") == ERR + "AccessDenied"
    assert _call(app, svc, "Get", interface=None) == ERR + "AccessDenied"


def test_an_interface_rule_still_allows_the_whole_interface():
    bus, mgr, svc, app = _world([(CALL, SVC, "/obj", IFACE)])
    assert _call(app, svc, "Get") == "delivered"
    assert _call(app, svc, "Delete") == "delivered"


def test_a_signal_rule_lets_that_signal_in_and_no_other():
    bus, mgr, svc, app = _world([(RECV | EXACT | PATH_TREE, SVC, "/", f"{IFACE}.Changed")])
    app.bus_ok("AddMatch", "s", ("type='signal'",))
    app.clear()
    svc.signal("Changed", path="/obj", interface=IFACE)
    svc.signal("Removed", path="/obj", interface=IFACE)
    got = [m.member for m in app.received() if m.type == SIGNAL and m.interface == IFACE]
    assert got == ["Changed"]


def test_the_unique_names_rule_shows_unique_names_but_not_their_well_known_names():
    bus, mgr, svc, app = _world([(NAME_TREE | PATH_TREE, ":", "/", "")])
    assert app.bus_ok("NameHasOwner", "s", (svc.unique_name,)) == [True]
    assert app.bus_ok("NameHasOwner", "s", (SVC,)) == [False]  # hidden == missing
    names = app.bus_ok("ListNames")[0]
    assert svc.unique_name in names and SVC not in names
    # seeing is not calling
    serial = app.call(svc.unique_name, "Get", path="/obj", interface=IFACE)
    assert app.reply_to(serial).error_name == ERR + "AccessDenied"


def test_without_the_unique_names_rule_other_unique_names_are_missing():
    bus, mgr, svc, app = _world([(CALL, "org.example.Else", "/", "")])
    assert app.bus_ok("NameHasOwner", "s", (svc.unique_name,)) == [False]


def test_log_denials_false_keeps_denials_out_of_the_log(caplog):
    with caplog.at_level(logging.INFO, logger="sandbus.containers.access"):
        bus, mgr, svc, app = _world([], LogDenials=Variant("b", False))
        assert _call(app, svc, "Get") == ERR + "ServiceUnknown"
        assert not [r for r in caplog.records if "denied" in r.getMessage()]
        bus, mgr, svc, app = _world([], LogDenials=Variant("b", True))
        assert _call(app, svc, "Get") == ERR + "ServiceUnknown"
        assert [r for r in caplog.records if "denied" in r.getMessage()]


def test_supported_access_flags_and_arguments_name_them():
    props = make_container_bus().manager.properties()
    assert props["SupportedAccessFlags"].value["ExactMember"] == EXACT
    assert "LogDenials" in props["SupportedArguments"].value
