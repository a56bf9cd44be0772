"""Containers1 access rules without sockets: validation, name and path
matching, removal, and the learn-mode minimiser (containers/learn.py)."""

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbus.containers.cli import _parser, compile_shorthand
from sandbus.containers.learn import (
    Learner,
    Observation,
    flatpak_args,
    format_allow,
    learned_rules,
    rule_to_flatpak,
)
from sandbus.containers.rules import (
    BUS_NAME_IS_SUBTREE as NAME_SUBTREE,
    CALL_METHODS as CALL,
    EXACT_MEMBER as EXACT,
    OBJECT_PATH_IS_SUBTREE as PATH_SUBTREE,
    OWN_BUS_NAME as OWN,
    RECEIVE_BROADCASTS as BROADCASTS,
    SEND_UNIX_FDS as FDS,
    Rule,
    RuleSet,
    compile_allow,
)
from sandbus.core.errors import DBusError

INVALID_ARGS = "org.freedesktop.DBus.Error.InvalidArgs"
OK = (CALL, "com.example.Ok", "/", "")


# -- validation ------------------------------------------------------------------------

@pytest.mark.parametrize("bad,why", [
    ((128, "com.example.A", "/", ""), "unknown flag bits 0x80"),
    ((CALL, "not a name", "/", ""), "invalid bus name"),
    ((CALL, "com..example", "/", ""), "invalid bus name"),
    ((CALL | NAME_SUBTREE, ":1.5", "/", ""), "unique name"),
    ((OWN, ":1.5", "/", ""), "unique name"),
    ((NAME_SUBTREE, "", "/", ""), "need a bus name"),
    ((OWN, "", "/", ""), "need a bus name"),
    ((CALL, "com.example.A", "no/slash", ""), "invalid object path"),
    ((CALL, "com.example.A", "/trailing/", ""), "invalid object path"),
    ((CALL, "com.example.A", "/", "NoDots"), "invalid interface"),
    ((CALL, "com.example.A", "/", "com.example.Bad-Dash"), "invalid interface"),
    ((CALL | EXACT, "com.example.A", "/", ""), "EXACT_MEMBER needs INTERFACE.MEMBER"),
    ((CALL | EXACT, "com.example.A", "/", "Method"), "EXACT_MEMBER needs INTERFACE.MEMBER"),
    ((CALL | EXACT, "com.example.A", "/", "com.example.I.Bad-Member"), "EXACT_MEMBER needs INTERFACE.MEMBER"),
    ((NAME_SUBTREE | CALL, ":", "/", ""), "for seeing them only"),
    ((NAME_SUBTREE | OWN, ":", "/", ""), "for seeing them only"),
    ((0, ":", "/", ""), "for seeing them only"),
])
@pytest.mark.parametrize("index", [0, 2])
def test_validation_errors_name_the_rule_index(bad, why, index):
    raw = [OK] * index + [bad] + [OK]
    with pytest.raises(DBusError) as e:
        compile_allow(raw)
    assert e.value.name == INVALID_ARGS
    assert e.value.message.startswith(f"Allow rule {index}: "), e.value.message
    assert why in e.value.message


def test_valid_rules_compile():
    rs = compile_allow([OK, (0, ":1.5", "/", ""), (CALL | PATH_SUBTREE, "", "/", ""),
                        (OWN | NAME_SUBTREE, "org.example", "/a/b", "org.example.I")])
    assert [r.as_tuple() for r in rs.rules][0] == OK
    assert len(rs.rules) == 4
    assert compile_allow([]).rules == []


# -- bus name matching -------------------------------------------------------------------

def _names(rs, name):
    return sorted(r.bus_name for r in rs.for_name(name))


def test_exact_subtree_and_any_name_matching():
    rs = RuleSet([Rule(CALL, "com.example.App", "/", ""),
                  Rule(CALL | NAME_SUBTREE, "org.tree", "/", ""),
                  Rule(CALL | NAME_SUBTREE, "org.tree.Deep", "/", "")])
    assert _names(rs, "com.example.App") == ["com.example.App"]
    assert _names(rs, "com.example.App.Sub") == []  # exact is exact
    assert _names(rs, "com.example") == []
    assert _names(rs, "org.tree") == ["org.tree"]  # a subtree covers its root
    assert _names(rs, "org.tree.A.B") == ["org.tree"]
    assert _names(rs, "org.tree.Deep.X") == ["org.tree", "org.tree.Deep"]
    assert _names(rs, "org.treehouse") == []  # prefix, not a subtree
    assert _names(rs, "org") == []
    rs.add(Rule(0, "", "/", ""))
    assert _names(rs, "anything.At.All") == [""]
    assert _names(rs, ":1.42") == [""]


def test_unique_names_never_match_subtrees():
    rs = RuleSet([Rule(CALL | NAME_SUBTREE, "org.x", "/", ""), Rule(CALL, ":1.7", "/", "")])
    assert _names(rs, ":1.7") == [":1.7"]
    assert _names(rs, ":1.70") == []


def test_for_names_deduplicates():
    r = Rule(CALL | NAME_SUBTREE, "org.x", "/", "")
    rs = RuleSet([r])
    assert rs.for_names([":1.1", "org.x.A", "org.x.B"]) == [r]


# -- object paths and interfaces --------------------------------------------------------------

@pytest.mark.parametrize("rule_path,subtree,path,covered", [
    ("/a", False, "/a", True),
    ("/a", False, "/a/b", False),
    ("/a", False, "/", False),
    ("/a", True, "/a", True),
    ("/a", True, "/a/b", True),
    ("/a", True, "/a/b/c", True),
    ("/a", True, "/ab", False),
    ("/a", True, "/", False),
    ("/a/b", True, "/a", False),
    ("/", True, "/", True),
    ("/", True, "/anything/at/all", True),
    ("/", False, "/", True),
    ("/", False, "/x", False),
    ("/", True, None, True),  # no path (e.g. activation): only "any"
    ("/", False, None, False),
    ("/a", True, None, False),
])
def test_path_subtree_semantics(rule_path, subtree, path, covered):
    r = Rule(CALL | (PATH_SUBTREE if subtree else 0), "a.b", rule_path, "")
    assert r.covers_path(path) is covered


def test_interface_matching():
    assert Rule(CALL, "a.b", "/", "").covers_interface("x.Y")
    assert Rule(CALL, "a.b", "/", "").covers_interface(None)
    assert Rule(CALL, "a.b", "/", "x.Y").covers_interface("x.Y")
    assert not Rule(CALL, "a.b", "/", "x.Y").covers_interface("x.Z")
    assert not Rule(CALL, "a.b", "/", "x.Y").covers_interface(None)


def test_exact_member_covers_that_member_only():
    r = Rule(CALL | EXACT, "a.b", "/", "x.Y.Method")
    assert r.covers_interface("x.Y", "Method")
    assert not r.covers_interface("x.Y", "Other")
    assert not r.covers_interface("x.Y", None)
    assert not r.covers_interface(None, "Method")  # a call without interface matches no member rule
    assert not r.covers_interface("x.Y.Method", None)
    assert r.as_tuple() == (CALL | EXACT, "a.b", "/", "x.Y.Method")


def test_shorthand_member_rules_are_exact():
    from sandbus.containers.shorthand import compile_rules
    assert compile_rules(call=["a.b=x.Y.Method@/p"]) == [(CALL | EXACT, "a.b", "/p", "x.Y.Method")]
    assert compile_rules(call=["a.b=x.Y.*@/p/*"]) == [(CALL | PATH_SUBTREE, "a.b", "/p", "x.Y")]
    assert compile_rules(broadcast=["a.b=x.Y.Changed"]) == [(BROADCASTS | EXACT | PATH_SUBTREE, "a.b", "/",
                                                             "x.Y.Changed")]
    rs = compile_allow(compile_rules(call=["a.b=x.Y.Method@/p"]))
    (r,) = rs.for_name("a.b")
    assert r.covers_path("/p") and r.covers_interface("x.Y", "Method")
    assert not r.covers_interface("x.Y", "Delete")


def test_unique_names_rule_sees_every_unique_name_only():
    rs = compile_allow([(NAME_SUBTREE | PATH_SUBTREE, ":", "/", "")])
    assert rs.for_name(":1.5") and rs.for_name(":1.999")
    assert not rs.for_name("org.example.A")
    assert not rs.for_name("a")


# -- removal ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["a.b", "", "org.tree"])
def test_remove_one_removes_one_identical_copy(name):
    flags = CALL | (NAME_SUBTREE if name == "org.tree" else 0)
    rs = RuleSet([Rule(flags, name, "/p", ""), Rule(flags, name, "/p", ""), Rule(flags, name, "/q", "")])
    probe = name or "x.y"
    assert len(rs.for_name(probe)) == 3
    assert rs.remove_one(flags, name, "/p", "")
    assert len(rs.for_name(probe)) == 2 and len(rs.rules) == 2
    assert rs.remove_one(flags, name, "/p", "")
    assert [r.path for r in rs.for_name(probe)] == ["/q"]
    assert not rs.remove_one(flags, name, "/p", "")  # none left
    assert not rs.remove_one(flags | FDS, name, "/q", "")  # not identical
    assert len(rs.rules) == 1


def test_remove_one_respects_granter_and_remove_granter():
    g1, g2 = object(), object()
    rs = RuleSet([Rule(CALL, ":1.1", "/", "", granter=g1), Rule(CALL, ":1.1", "/", "", granter=g2)])
    assert not rs.remove_one(CALL, ":1.1", "/", "")  # granter None: not these
    assert rs.remove_one(CALL, ":1.1", "/", "", granter=g2)
    assert [r.granter for r in rs.rules] == [g1]
    rs.add(Rule(0, "a.b", "/", "", granter=g1))
    rs.remove_granter(g1)
    assert rs.rules == [] and rs.for_name(":1.1") == [] and rs.for_name("a.b") == []


# -- the learned-rules minimiser ---------------------------------------------------------------------

def obs(what, dest, path=None, iface=None, member=None, names=()):
    return Observation(what, ":1.9", dest, tuple(names), path, iface, member)


def test_minimiser_exact_calls_no_widening():
    o = [obs("call", "com.example.Svc", "/a", "com.example.I", "M"),
         obs("call", "com.example.Svc", "/a", "com.example.I", "N"),  # same rule: member is not in rules
         obs("call", "com.example.Svc", "/a/b", "com.example.I", "M"),
         obs("call", "com.example.Svc", "/c", None, "M")]
    rules, unexpressed = learned_rules(o)
    assert rules == [(CALL, "com.example.Svc", "/a", "com.example.I"),
                     (CALL, "com.example.Svc", "/a/b", "com.example.I"),
                     (CALL, "com.example.Svc", "/c", "")]
    assert unexpressed == []


def test_minimiser_merges_only_where_exact():
    o = [obs("call", "a.b", "/x", "a.b.I", "M"),
         obs("call", "a.b", "/x", None, "M"),  # interface "" subsumes a.b.I on /x
         obs("broadcast", ":1.3", "/x", "a.b.I", "Sig", names=["a.b"]),  # same object, other flag
         obs("own", "a.b"),
         obs("fds", "a.b", "/x", "a.b.I", "M"),
         obs("activation", "a.b")]
    rules, _ = learned_rules(o)
    assert rules == [(CALL | OWN | FDS, "a.b", "/x", ""), (BROADCASTS, "a.b", "/x", "a.b.I")]


def test_minimiser_see_own_activation_alone():
    o = [obs("see", "org.looked.Up"), obs("own", "org.my.App"), obs("activation", "org.started.Svc"),
         obs("see", "org.my.App")]
    rules, _ = learned_rules(o)
    assert rules == [(0, "org.looked.Up", "/", ""), (OWN, "org.my.App", "/", ""),
                     (CALL, "org.started.Svc", "/", "")]


def test_minimiser_prefers_well_known_names():
    o = [obs("call", ":1.3", "/p", "x.y.I", "M", names=["org.b", "org.a"]),  # addressed by unique name
         obs("call", "org.b", "/q", "x.y.I", "M", names=["org.a", "org.b"]),  # and by org.b
         obs("broadcast", ":1.3", "/s", "x.y.I", "S", names=["org.a", "org.b"]),
         obs("call", ":1.4", "/p", "x.y.I", "M"),  # only a unique name: no rule can say it
         obs("GetId", "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "GetId")]
    rules, unexpressed = learned_rules(o)
    assert rules == [(CALL, "org.b", "/p", "x.y.I"), (CALL, "org.b", "/q", "x.y.I"),
                     (BROADCASTS, "org.b", "/s", "x.y.I")]
    assert sorted(u.what for u in unexpressed) == ["GetId", "call"]


def test_minimiser_keeps_base_rules_and_skips_what_they_cover():
    base = [(CALL | PATH_SUBTREE, "org.base", "/obj", ""), (0, "org.seen", "/", "")]
    o = [obs("call", "org.base", "/obj/x", "i.J", "M"),  # covered
         obs("call", "org.base", "/other", "i.J", "M"),  # not covered
         obs("see", "org.seen"),  # covered
         obs("fds", "org.base", "/obj/x", "i.J", "M")]  # base has no FDS
    rules, _ = learned_rules(o, base)
    assert rules == base + [(CALL | FDS, "org.base", "/other", "i.J")]


def test_learner_deduplicates_by_shape():
    lr = Learner()
    assert lr.record(Observation("call", ":1.1", "a.b", (), "/p", "i.J", "M"))
    assert not lr.record(Observation("call", ":1.2", "a.b", (), "/p", "i.J", "M"))  # other sender
    # by unique name: the well-known names the target had count, not the unique name
    assert lr.record(Observation("call", ":1.5", ":1.7", ("a.b",), "/p", "i.J", "M"))
    assert not lr.record(Observation("call", ":1.5", ":1.8", ("a.b",), "/p", "i.J", "M"))
    assert lr.record(Observation("call", ":1.5", ":1.7", ("a.b",), "/p", "i.J", "M2"))
    assert lr.counts[next(iter(lr.counts))] == 2
    assert len(lr.observations()) == 3


def test_flatpak_args_and_allow_format():
    o = [obs("call", "org.x", "/p", "org.x.I", "Do"), obs("call", "org.x", "/q", None, "Any"),
         obs("broadcast", ":1.3", "/s", "org.x.I", "Changed", names=["org.x"]),
         obs("see", "org.y"), obs("own", "org.me"), obs("activation", "org.z")]
    args = flatpak_args(o)
    assert args == ["--own=org.me",
                    "--broadcast=org.x=org.x.I.Changed@/s", "--call=org.x=org.x.I.Do@/p", "--call=org.x=*@/q",
                    "--see=org.y", "--talk=org.z"]
    rules, _ = learned_rules(o)
    assert [format_allow(r) for r in rules][:2] == ["--allow 32:org.me:/:", "--allow 4:org.x:/p:org.x.I"]
    assert rule_to_flatpak((CALL | BROADCASTS | PATH_SUBTREE | NAME_SUBTREE, "org.t", "/", "")) == \
        ["--talk=org.t.*"]
    assert rule_to_flatpak((CALL | PATH_SUBTREE, "org.t", "/a", "org.t.I")) == ["--call=org.t=org.t.I.*@/a/*"]
    assert rule_to_flatpak((CALL | EXACT, "org.t", "/a", "org.t.I.Get")) == ["--call=org.t=org.t.I.Get@/a"]
    assert rule_to_flatpak((NAME_SUBTREE | PATH_SUBTREE, ":", "/", "")) == ["--sloppy-names"]


# -- property: the learned rules allow exactly the observations, and each is needed ----------------

_seg = st.text(alphabet=string.ascii_lowercase[:3], min_size=1, max_size=2)
_wk = st.sampled_from(["org.a", "org.b", "org.a.c"])
_path = st.lists(_seg, max_size=2).map(lambda p: "/" + "/".join(p))
_iface = st.sampled_from([None, "org.i.One", "org.i.Two"])


@st.composite
def _observation(draw):
    what = draw(st.sampled_from(["call", "signal", "broadcast", "own", "see", "fds", "activation"]))
    names = tuple(sorted(set(draw(st.lists(_wk, max_size=2)))))
    if what == "broadcast":
        return obs(what, ":1.3", draw(_path), draw(_iface), "S", names=names)
    if what in ("own", "see", "activation"):
        return obs(what, draw(_wk))
    dest = draw(st.one_of(_wk, st.just(":1.3")))
    return obs(what, dest, draw(_path), draw(_iface), "M", names=names)


def _allowed(rules, o) -> bool:
    """What access.py would decide for o under rules (a RuleSet)."""
    def allows(names, flag, check_object=True):
        return any(r.flags & flag and (not check_object or (r.covers_path(o.path)
                                                            and r.covers_interface(o.interface, o.member)))
                   for r in rules.for_names(names))
    # A target addressed by a well-known name is judged by that name alone
    # (the rules must not depend on what else its owner happens to own).
    targets = (o.dest,) if o.what != "broadcast" and not o.dest.startswith(":") else o.names
    if o.what in ("call", "signal"):
        return allows(targets, CALL)
    if o.what == "broadcast":
        return allows(targets, BROADCASTS)
    if o.what == "fds":
        return allows(targets, FDS, check_object=False)
    if o.what == "own":
        return allows((o.dest,), OWN, check_object=False)
    if o.what == "activation":
        return allows((o.dest,), CALL, check_object=False)
    return bool(rules.for_names((o.dest,)))  # see


@settings(max_examples=300, deadline=None)
@given(st.lists(_observation(), max_size=8))
def test_learned_rules_allow_the_traffic_and_each_rule_is_needed(observations):
    rules, unexpressed = learned_rules(observations)
    rs = compile_allow(rules)
    for o in observations:
        if o not in unexpressed:
            assert _allowed(rs, o), (o, rules)
    for o in unexpressed:  # only what no well-known name can say
        assert not o.names and (o.what == "broadcast" or o.dest.startswith(":")), o
    assert len(set(rules)) == len(rules)
    # minimal: without any one rule, some observation is denied
    expressed = [o for o in observations if o not in unexpressed]
    for i in range(len(rules)):
        fewer = compile_allow(rules[:i] + rules[i + 1:])
        assert not all(_allowed(fewer, o) for o in expressed), (rules[i], rules)


@settings(max_examples=100, deadline=None)
@given(st.lists(_observation(), max_size=8))
def test_flatpak_args_compile_to_rules_that_allow_the_traffic(observations):
    _, unexpressed = learned_rules(observations)
    args = flatpak_args(observations)
    argv = ["add", "--type", "t.t", "--name", "n"]
    for a in args:
        argv.append(a)
    rs = compile_allow(compile_shorthand(_parser().parse_args(argv)))
    for o in observations:
        if o not in unexpressed and o.what != "fds":  # xdg-dbus-proxy has no fd control
            assert _allowed(rs, o), (o, args)
