"""sandbus-dbus-proxy's command line (xdg-dbus-proxy's), the rules a group
compiles to, and /.flatpak-info, without sockets."""

import os

import pytest

from sandbus.containers.rules import (
    BUS_NAME_IS_SUBTREE as NAME_TREE,
    CALL_METHODS as CALL,
    EXACT_MEMBER as EXACT,
    OBJECT_PATH_IS_SUBTREE as PATH_TREE,
    OWN_BUS_NAME as OWN,
    RECEIVE_BROADCASTS as RECV,
    SEND_UNIX_FDS as FDS,
    compile_allow,
)
from sandbus.proxy import cmdline, flatpak_info
from sandbus.proxy.native import GroupError, allow_rules


def test_groups_and_their_options():
    a = cmdline.parse(["--fd=7", "unix:path=/a", "/p1", "--filter", "--own=org.x.App.*", "--talk=org.n",
                       "--see=org.s", "--call=org.c=org.c.I.M@/o", "--broadcast=org.b=@/b/*", "--log",
                       "unix:path=/b", "/p2", "--sloppy-names", "--fd=9"])
    assert a.sync_fd == 9  # the last --fd wins, wherever it stands
    one, two = a.groups
    assert (one.address, one.path, one.filter, one.log, one.sloppy_names) == ("unix:path=/a", "/p1", True, True, False)
    assert one.own == ["org.x.App.*"] and one.talk == ["org.n"] and one.see == ["org.s"]
    assert one.call == ["org.c=org.c.I.M@/o"] and one.broadcast == ["org.b=@/b/*"]
    assert (two.address, two.path, two.filter, two.sloppy_names) == ("unix:path=/b", "/p2", False, True)
    assert one.argv()[:4] == ["unix:path=/a", "/p1", "--filter", "--own=org.x.App.*"]


def test_args_fd_is_spliced_in_where_it_stands(tmp_path):
    fd = os.memfd_create("args")
    os.write(fd, b"unix:path=/a\0/p\0--filter\0--talk=org.n")  # no final NUL: still an argument
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        a = cmdline.parse([f"--args={fd}", "--fd=3"])
    finally:
        os.close(fd)
    (g,) = a.groups
    assert (g.address, g.path, g.filter, g.talk, a.sync_fd) == ("unix:path=/a", "/p", True, ["org.n"], 3)


@pytest.mark.parametrize("argv,error", [
    (["--bogus"], "Unknown argument --bogus"),
    (["unix:path=/a", "/p", "--bogus"], "Unknown argument --bogus"),
    (["unix:path=/a"], "No socket path given"),
    (["unix:path=/a", "--filter"], "No socket path given"),
    (["--fd=x"], "Invalid fd x"),
    (["--fd=-1"], "Invalid fd -1"),
    (["--args=no"], "Invalid --args fd no"),
    (["--fd=3"], "No proxies specified"),
    (["unix:path=/a", "/p", "--talk=:1.2"], "':1.2' is not a valid dbus name"),
    (["unix:path=/a", "/p", "--own=not a name"], "is not a valid dbus name"),
    (["unix:path=/a", "/p", "--call=org.x"], "'org.x' is not a valid name + rule"),
])
def test_bad_command_lines(argv, error):
    with pytest.raises(cmdline.CmdlineError) as e:
        cmdline.parse(argv)
    assert error in str(e.value)
    assert "\n" not in str(e.value)


def test_help_and_version():
    with pytest.raises(cmdline.Exit) as e:
        cmdline.parse(["unix:path=/a", "/p", "--help"])
    assert e.value.text.startswith("usage: sandbus-dbus-proxy [OPTIONS...] [ADDRESS PATH [OPTIONS...] ...]")
    with pytest.raises(cmdline.Exit) as e:
        cmdline.parse(["--version"])
    assert e.value.text.startswith("sandbus-dbus-proxy ")


def _group(*options):
    return cmdline.parse(["unix:path=/a", "/p", *options]).groups[0]


def test_flatpak_session_group_compiles_to_exact_rules():
    rules = allow_rules(_group("--filter", "--own=org.x.App.*", "--talk=org.n", "--see=org.s",
                               "--call=org.c=org.c.I.Get@/o", "--call=org.freedesktop.portal.*=*",
                               "--broadcast=org.freedesktop.portal.*=@/org/freedesktop/portal/*"))
    assert rules == [
        (0 | PATH_TREE, "org.s", "/", ""),
        (CALL | RECV | FDS | PATH_TREE, "org.n", "/", ""),
        (CALL | RECV | OWN | FDS | NAME_TREE | PATH_TREE, "org.x.App", "/", ""),
        (CALL | EXACT | FDS, "org.c", "/o", "org.c.I.Get"),
        (CALL | FDS | NAME_TREE | PATH_TREE, "org.freedesktop.portal", "/", ""),
        (RECV | NAME_TREE | PATH_TREE, "org.freedesktop.portal", "/org/freedesktop/portal", ""),
    ]
    compile_allow(rules)  # the bus takes them


def test_sloppy_names_adds_the_unique_names_rule():
    rules = allow_rules(_group("--filter", "--sloppy-names"))
    assert rules == [(NAME_TREE | PATH_TREE, ":", "/", "")]
    compile_allow(rules)


def test_a_bad_rule_is_one_line():
    with pytest.raises(GroupError) as e:
        allow_rules(_group("--filter", "--call=org.c=NoDot"))
    assert "interface.method" in str(e.value)


INFO = """[Application]
name=org.example.App
runtime=runtime/org.example.Platform/x86_64/stable

# a comment
[Instance]
instance-id = 42
[Context]
shared=network;ipc;
[Session Bus Policy]
org.freedesktop.Notifications=talk
"""


def test_flatpak_info_sections_become_metadata():
    sections = flatpak_info.parse(INFO)
    assert flatpak_info.app_id(sections) == "org.example.App"
    md = flatpak_info.metadata(sections)
    assert md["Instance"].signature == "a{sv}"
    assert md["Instance"].value["instance-id"].value == "42"
    assert md["Context"].value["shared"].value == "network;ipc;"
    assert md["Session Bus Policy"].value["org.freedesktop.Notifications"].value == "talk"
    assert flatpak_info.app_id(flatpak_info.parse("[Runtime]\nname=org.example.Platform\n")) == \
        "org.example.Platform"


@pytest.mark.parametrize("text", ["key=value\n", "[A]\nno equals sign\n", "[A]\n=value\n"])
def test_a_broken_flatpak_info_is_one_line(text):
    with pytest.raises(flatpak_info.FlatpakInfoError) as e:
        flatpak_info.parse(text)
    assert "\n" not in str(e.value)


def test_no_flatpak_info_means_no_app_id(tmp_path, monkeypatch):
    monkeypatch.setenv(flatpak_info.PATH_VARIABLE, str(tmp_path / "none"))
    assert flatpak_info.load() == ("", {})
