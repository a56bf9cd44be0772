"""Tests for <allow>/<deny> validation and sandbus.config.policy semantics."""

import logging
import os

import pytest

from sandbus.config import ConfigError, Creds, MessageFacts, Policy, load_config_text, load_standard

CALL, RETURN, ERROR, SIGNAL = 1, 2, 3, 4
USERS = {"root": 0, "alice": 1000, "bob": 1001, "messagebus": 100}
GROUPS = {"root": 0, "staff": 50, "wheel": 10}
ALICE = Creds(1000, (1000, 50))
BOB = Creds(1001, (1001,))
ROOT = Creds(0, (0,))


def config(body, path="/etc/test.conf"):
    return load_config_text(f"<busconfig>\n{body}\n</busconfig>", path)


def policy(body, bus_uid=0):
    return Policy(config(body), bus_uid=bus_uid,
                  lookup_user=USERS.get, lookup_group=GROUPS.get)


def default(rules):
    return policy(f'<policy context="default">{rules}</policy>')


def call(dest="org.svc", interface="org.svc.Iface", member="Do", path="/o",
         dest_names=None, sender_names=(":1.1",), **kw):
    names = (dest, ":1.9") if dest_names is None else dest_names
    return MessageFacts(CALL, interface=interface, member=member, path=path,
                        sender_names=sender_names, destination_names=names,
                        destination=dest, **kw)


def reply(msg_type=RETURN, requested=True, error_name=None, **kw):
    return MessageFacts(msg_type, error_name=error_name, sender_names=(":1.9",),
                        destination_names=(":1.1",), destination=":1.1",
                        requested_reply=requested, **kw)


def broadcast(interface="org.svc.Iface", member="Changed", sender_names=(":1.9", "org.svc"), **kw):
    return MessageFacts(SIGNAL, interface=interface, member=member, path="/o",
                        sender_names=sender_names, **kw)


# -- rule validation ----------------------------------------------------------

@pytest.mark.parametrize("rule, message", [
    ("<allow/>", "one or more attributes"),
    ('<allow min_fds="1"/>', "one or more attributes"),
    ('<allow send_interface="a" receive_interface="b"/>', "send and receive"),
    ('<allow own="a" send_destination="b"/>', "cannot be combined"),
    ('<allow own="a" user="b"/>', "cannot be combined"),
    ('<allow user="a" group="b"/>', "cannot be combined"),
    ('<allow own="a" eavesdrop="true"/>', "cannot be combined"),
    ('<allow own="a" own_prefix="b"/>', "cannot be combined"),
    ('<allow send_destination="a" send_destination_prefix="a"/>', "send_destination_prefix"),
    ('<allow send_error="a" send_interface="b"/>', "send_error"),
    ('<allow receive_error="a" receive_member="b" receive_path="/"/>', "receive_error"),
    ('<allow send_type="telegram"/>', "bad message type"),
    ('<allow receive_type="call"/>', "bad message type"),
    ('<allow send_destination="a" eavesdrop="yes"/>', "must be true or false"),
    ('<allow send_destination="a" send_requested_reply="1"/>', "must be true or false"),
    ('<allow send_destination="a" send_broadcast="true"/>', "cannot match anything"),
    ('<allow send_destination="a" max_fds="-1"/>', "max_fds"),
    ('<allow send_sender="a"/>', '"send_sender" is invalid'),
    ('<allow receive_destination="a"/>', '"receive_destination" is invalid'),
    ('<allow send_destination="a">text</allow>', "no text"),
])
def test_invalid_rules_are_rejected(rule, message):
    with pytest.raises(ConfigError) as info:
        config(f'<policy context="default">\n{rule}\n</policy>', path="/etc/x.conf")
    assert message in str(info.value)
    assert str(info.value).startswith("/etc/x.conf:3: <allow>:")


@pytest.mark.parametrize("policy_attributes, message", [
    ("", "exactly one"),
    ('context="default" user="root"', "exactly one"),
    ('context="sometimes"', "context"),
    ('at_console="maybe"', "at_console"),
    ('colour="red"', '"colour"'),
])
def test_invalid_policy_elements(policy_attributes, message):
    with pytest.raises(ConfigError) as info:
        config(f"<policy {policy_attributes}/>")
    assert message in str(info.value) and info.value.element == "policy"


def test_connection_rules_are_only_allowed_in_global_policies():
    with pytest.raises(ConfigError) as info:
        config('<policy user="root"><deny user="bob"/></policy>')
    assert "bus-global" in str(info.value)
    with pytest.raises(ConfigError):
        config('<policy at_console="true"><allow group="wheel"/></policy>')


def test_valid_rule_combinations_parse():
    parsed = config("""<policy context="mandatory">
        <allow send_destination="a" send_interface="b" send_member="c" send_path="/"
               send_type="*" send_requested_reply="false" eavesdrop="true"
               min_fds="0" max_fds="3" log="true"/>
        <deny receive_sender="a" receive_interface="b" receive_member="c" receive_path="/"
              receive_type="signal" receive_requested_reply="true" eavesdrop="false"/>
        <deny send_error="e" send_broadcast="false"/>
        <allow eavesdrop="true"/>
        <allow own_prefix="org.x"/>
        <deny user="*"/> <allow group="staff"/>
    </policy>""")
    kinds = [r.kind for r in config_rules(parsed)]
    assert kinds == ["send", "receive", "send", "receive", "own", "user", "group"]


def config_rules(parsed):
    return [rule for block in parsed.policies for rule in block.rules]


# -- ordering: default < group < user < at_console < mandatory ----------------

LAYERS = """
<policy context="mandatory"><allow own="m"/></policy>
<policy user="alice"><deny own="m"/><allow own="u"/><deny own="c"/></policy>
<policy group="staff"><allow own="g"/><deny own="u"/></policy>
<policy context="default"><deny own="*"/><allow own="d"/><deny own="g"/></policy>
<policy at_console="true"><allow own="c"/></policy>
<policy at_console="false"><allow own="nc"/></policy>
"""


def test_policy_layers_apply_in_dbus_order_regardless_of_file_order():
    p = policy(LAYERS)
    alice = p.for_connection(ALICE)
    assert alice.can_own("d")          # default only
    assert alice.can_own("g")          # group overrides default
    assert alice.can_own("u")          # user overrides group
    assert alice.can_own("m")          # mandatory overrides user
    assert not alice.can_own("c")      # user deny; not at console
    assert alice.can_own("nc")         # at_console="false" applies off-console
    console = p.for_connection(Creds(1000, (1000, 50), at_console=True))
    assert console.can_own("c") and not console.can_own("nc")
    bob = p.for_connection(BOB)
    assert bob.can_own("d") and not bob.can_own("g") and not bob.can_own("u")
    assert not bob.can_own("other")


def test_last_matching_rule_wins_within_a_layer():
    p = default('<allow own="x"/><deny own="x"/><allow own_prefix="y"/><deny own="y.z"/>')
    c = p.for_connection(BOB)
    assert not c.can_own("x")
    assert c.can_own("y") and c.can_own("y.a") and not c.can_own("y.z")


def test_several_policies_for_the_same_user_concatenate_in_file_order():
    p = policy('<policy user="alice"><allow own="a"/></policy>'
               '<policy user="1000"><deny own="a"/></policy>')
    assert not p.for_connection(ALICE).can_own("a")


def test_unknown_users_and_groups_are_ignored_with_a_log(caplog):
    with caplog.at_level(logging.WARNING, logger="sandbus.config"):
        p = policy('<policy user="nosuchuser"><allow own="a"/></policy>'
                   '<policy context="default"><allow group="nosuchgroup"/><allow own="b"/></policy>')
    assert "nosuchuser" in caplog.text and "nosuchgroup" in caplog.text
    assert not p.for_connection(ALICE).can_own("a")
    assert p.for_connection(ALICE).can_own("b")


# -- own ----------------------------------------------------------------------

def test_own_wildcard_and_prefix_components():
    c = default('<allow own="*"/><deny own_prefix="a.b"/>').for_connection(BOB)
    assert c.can_own("zzz")
    assert not c.can_own("a.b") and not c.can_own("a.b.c.d")
    assert c.can_own("a.bc") and c.can_own("a.c") and c.can_own("a")


def test_check_own_reports_the_deciding_rule():
    c = default('<deny own="org.x"/>').for_connection(BOB)
    decision = c.check_own("org.x")
    assert not decision and decision.rule == '<deny own="org.x"/> in /etc/test.conf:2'
    assert c.check_own("org.y").rule is None


# -- connecting ---------------------------------------------------------------

def test_connect_defaults_to_the_bus_user_only():
    p = policy("", bus_uid=1000)
    assert p.allows_connect(ALICE) and not p.allows_connect(BOB)


def test_connect_rules():
    p = policy('<policy context="default"><allow user="*"/><deny user="bob"/></policy>'
               '<policy context="mandatory"><deny group="staff"/></policy>', bus_uid=0)
    assert p.allows_connect(Creds(5, (5,)))
    assert not p.allows_connect(BOB)
    assert not p.allows_connect(ALICE)          # member of staff
    assert policy('<policy context="default"><deny user="root"/></policy>').allows_connect(ROOT) is False
    assert policy('<policy context="default"><allow group="*"/></policy>', bus_uid=7).allows_connect(BOB)
    assert policy('<policy context="default"><allow user="1001"/></policy>', bus_uid=7).allows_connect(BOB)


# -- send rules ---------------------------------------------------------------

def test_nothing_matching_means_denied():
    assert not default('<allow own="*"/>').for_connection(BOB).check_send(call())


def test_send_destination_matches_any_name_of_the_receiver():
    c = default('<allow send_destination="*"/><deny send_destination="org.b"/>').for_connection(BOB)
    assert c.check_send(call(dest="org.a", dest_names=("org.a", ":1.9")))
    # The receiver also owns org.b, so a message to org.a is denied too.
    assert not c.check_send(call(dest="org.a", dest_names=("org.a", "org.b", ":1.9")))
    assert not c.check_send(call(dest=":1.9", dest_names=(":1.9", "org.b")))


def test_send_destination_wildcard_matches_broadcasts_too():
    c = default('<allow send_destination="*"/>').for_connection(BOB)
    assert c.check_send(broadcast())


def test_send_destination_prefix():
    c = default('<allow send_destination_prefix="org.a"/>').for_connection(BOB)
    assert c.check_send(call(dest="org.a"))
    assert c.check_send(call(dest="org.a.b.c"))
    assert not c.check_send(call(dest="org.ab"))
    assert not c.check_send(call(dest="org.b"))


def test_send_interface_member_path_error_and_type():
    c = default("""
        <allow send_destination="org.svc" send_interface="org.svc.Iface"/>
        <deny send_destination="org.svc" send_interface="org.svc.Iface" send_member="Bad"/>
        <deny send_destination="org.svc" send_path="/secret"/>
        <deny send_type="signal"/>""").for_connection(BOB)
    assert c.check_send(call())
    assert not c.check_send(call(member="Bad"))
    assert not c.check_send(call(path="/secret"))
    # allow + send_interface does not match messages without an interface...
    assert not c.check_send(call(interface=None))
    assert not c.check_send(MessageFacts(SIGNAL, interface="org.svc.Iface", member="S",
                                         destination="org.svc", destination_names=("org.svc",)))
    c2 = default('<allow send_destination="*"/><deny send_interface="org.evil"/>').for_connection(BOB)
    # ...but a deny with send_interface does.
    assert not c2.check_send(call(interface=None))
    assert c2.check_send(call(interface="org.good"))
    c3 = default('<allow send_destination="*"/>'
                 '<deny send_destination="org.svc" send_member="Bad"/>').for_connection(BOB)
    # member only fails to match when the message has a different member.
    assert not c3.check_send(call(member="Bad"))
    assert c3.check_send(call(member="Good"))
    c4 = default('<allow send_type="error" send_error="org.Ok" send_requested_reply="false"/>')
    c4 = c4.for_connection(BOB)
    assert c4.check_send(reply(ERROR, error_name="org.Ok"))
    assert not c4.check_send(reply(ERROR, error_name="org.Other"))


def test_send_broadcast():
    c = default('<allow send_broadcast="true"/>').for_connection(BOB)
    assert c.check_send(broadcast())
    assert not c.check_send(MessageFacts(SIGNAL, interface="i", member="m",
                                         destination=":1.9", destination_names=(":1.9",)))
    c = default('<allow send_broadcast="false"/>').for_connection(BOB)
    assert not c.check_send(broadcast())
    assert c.check_send(call())


def test_min_and_max_fds():
    c = default('<allow send_destination="*" max_fds="2"/><deny send_destination="*" min_fds="5"/>')
    c = c.for_connection(BOB)
    assert c.check_send(call(n_fds=0)) and c.check_send(call(n_fds=2))
    assert not c.check_send(call(n_fds=3))      # no rule matches
    assert not c.check_send(call(n_fds=5))


def test_requested_reply_defaults():
    c = default('<deny send_destination="*"/>'
                '<allow send_type="method_return"/>').for_connection(BOB)
    # <allow> matches only requested replies by default.
    assert c.check_send(reply(requested=True))
    assert not c.check_send(reply(requested=False))
    # <deny> without send_requested_reply only denies unrequested replies.
    c = default('<allow send_type="method_return" send_requested_reply="false"/>'
                '<deny send_destination=":1.1"/>').for_connection(BOB)
    assert c.check_send(reply(requested=True))
    assert not c.check_send(reply(requested=False))
    c = default('<allow send_type="method_return" send_requested_reply="false"/>'
                '<deny send_destination=":1.1" send_requested_reply="true"/>').for_connection(BOB)
    assert not c.check_send(reply(requested=True))
    # An <allow eavesdrop="true"> allows unrequested replies as well.
    c = default('<allow send_destination="*" eavesdrop="true"/>').for_connection(BOB)
    assert c.check_send(reply(requested=False))


def test_decision_names_the_rule_and_log_flag():
    c = default('<deny send_destination="org.x" log="true"/>').for_connection(BOB)
    decision = c.check_send(call(dest="org.x"))
    assert decision == type(decision)(False, '<deny send_destination="org.x" log="true"/> '
                                             'in /etc/test.conf:2', True)


# -- receive rules and eavesdropping -------------------------------------------

def test_receive_sender_and_type():
    c = default('<allow receive_type="*"/><deny receive_sender="org.svc" receive_type="signal"/>')
    c = c.for_connection(BOB)
    assert not c.check_receive(broadcast())                     # sender owns org.svc
    assert c.check_receive(broadcast(sender_names=(":1.9",)))
    assert c.check_receive(call())


def test_eavesdrop_semantics():
    c = default('<allow receive_sender="*"/>').for_connection(BOB)
    assert c.check_receive(call())
    assert not c.check_eavesdrop(call())             # allow without eavesdrop="true"
    assert c.check_eavesdrop(broadcast())            # broadcasts are not eavesdropping
    c = default('<allow eavesdrop="true"/>').for_connection(BOB)
    assert c.check_eavesdrop(call()) and c.check_receive(call())
    c = default('<allow eavesdrop="true"/><deny receive_sender="*" eavesdrop="true"/>')
    c = c.for_connection(BOB)
    assert c.check_receive(call())                   # deny applies only when eavesdropping
    assert not c.check_eavesdrop(call())


def test_receive_requested_reply():
    c = default('<allow receive_type="method_return"/>').for_connection(BOB)
    assert c.check_receive(reply(requested=True))
    assert not c.check_receive(reply(requested=False))
    c = default('<allow receive_type="method_return" receive_requested_reply="false"/>')
    assert c.for_connection(BOB).check_receive(reply(requested=False))


# -- the stock configurations ---------------------------------------------------

@pytest.fixture(scope="module")
def system_policy():
    return Policy(load_standard("system"), bus_uid=USERS["messagebus"])


def test_system_bus_ordinary_user(system_policy):
    user = system_policy.for_connection(ALICE)
    assert system_policy.allows_connect(ALICE)
    assert not user.can_own("org.example.Anything")
    assert user.check_send(call(dest="org.freedesktop.DBus", interface="org.freedesktop.DBus",
                                member="Hello", path="/org/freedesktop/DBus",
                                dest_names=("org.freedesktop.DBus",)))
    denied = user.check_send(call(dest="org.freedesktop.DBus", interface="org.freedesktop.DBus",
                                  member="UpdateActivationEnvironment",
                                  dest_names=("org.freedesktop.DBus",)))
    assert not denied and "UpdateActivationEnvironment" in denied.rule
    assert not user.check_send(call(dest="org.freedesktop.DBus",
                                    interface="org.freedesktop.DBus.Monitoring",
                                    member="BecomeMonitor", dest_names=("org.freedesktop.DBus",)))
    assert not user.check_send(call(dest=":1.50", dest_names=(":1.50",)))
    assert user.check_send(broadcast())
    assert user.check_send(reply(requested=True))
    assert not user.check_send(reply(requested=False))
    assert user.check_receive(call()) and user.check_receive(broadcast())
    assert not user.check_eavesdrop(call())


def test_system_bus_root(system_policy):
    root = system_policy.for_connection(ROOT)
    assert root.check_send(call(dest="org.freedesktop.DBus",
                                interface="org.freedesktop.DBus.Monitoring",
                                member="BecomeMonitor", dest_names=("org.freedesktop.DBus",)))
    assert not root.can_own("org.example.Anything")


@pytest.mark.skipif(not os.path.exists("/usr/share/dbus-1/system.d/org.freedesktop.login1.conf"),
                    reason="no logind policy installed")
def test_system_bus_service_holes(system_policy):
    root = system_policy.for_connection(ROOT)
    user = system_policy.for_connection(ALICE)
    assert root.can_own("org.freedesktop.login1") and not user.can_own("org.freedesktop.login1")
    login1 = ("org.freedesktop.login1", ":1.7")
    assert user.check_send(call(dest="org.freedesktop.login1", dest_names=login1,
                                interface="org.freedesktop.DBus.Introspectable",
                                member="Introspect"))
    assert not user.check_send(call(dest="org.freedesktop.login1", dest_names=login1,
                                    interface="org.freedesktop.login1.Secret", member="X"))


def test_session_bus_allows_everything():
    p = Policy(load_standard("session", environ={"HOME": "/h"}), bus_uid=1000)
    assert p.allows_connect(ALICE) and not p.allows_connect(BOB)
    c = p.for_connection(ALICE)
    assert c.can_own("org.anything")
    assert c.check_send(call()) and c.check_send(broadcast()) and c.check_send(reply(requested=False))
    assert c.check_receive(call()) and c.check_eavesdrop(call())


def test_connection_policies_are_cached_per_credentials():
    p = default('<allow own="*"/>')
    assert p.for_connection(Creds(5, (5,))) is p.for_connection(Creds(5, (5,)))
