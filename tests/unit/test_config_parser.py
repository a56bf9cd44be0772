"""Tests for sandbus.config.parser: elements, includes, merging, errors, safety."""

import glob
import logging
import os
import textwrap

import pytest

from sandbus.config import BusConfig, ConfigError, Limits, load_config, load_config_text, load_standard
from sandbus.config import builtin
from sandbus.config.model import LIMIT_NAMES, ServiceDir
from sandbus.config.servicedirs import standard_session_servicedirs, standard_system_servicedirs

DOCTYPE = ('<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"\n'
           ' "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n')


def write(directory, name, body, doctype=True):
    path = os.path.join(str(directory), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write((DOCTYPE if doctype else "") + textwrap.dedent(body))
    return path


def parse(tmp_path, body):
    return load_config(write(tmp_path, "bus.conf", body))


def parse_error(tmp_path, body):
    with pytest.raises(ConfigError) as info:
        parse(tmp_path, body)
    return info.value


# -- stock files --------------------------------------------------------------

@pytest.mark.skipif(not os.path.exists("/usr/share/dbus-1/system.conf"), reason="no stock config")
def test_stock_system_conf_loads():
    config = load_config("/usr/share/dbus-1/system.conf")
    assert config.bus_type == "system"
    assert config.user == "messagebus"
    assert config.fork and config.syslog
    assert config.pidfile == "/run/dbus/pid"
    assert config.auth == ["EXTERNAL"]
    assert config.listen == ["unix:path=/run/dbus/system_bus_socket"]
    assert config.servicehelper.endswith("dbus-daemon-launch-helper")
    assert [d.path for d in config.servicedirs] == [
        "/usr/local/share/dbus-1/system-services", "/usr/share/dbus-1/system-services",
        "/lib/dbus-1/system-services"]
    assert config.limits == Limits()  # system.conf overrides nothing
    assert config.policies[0].context == "default"


@pytest.mark.skipif(not os.path.exists("/usr/share/dbus-1/session.conf"), reason="no stock config")
def test_stock_session_conf_loads():
    config = load_config("/usr/share/dbus-1/session.conf", environ={"HOME": "/home/u"})
    assert config.bus_type == "session"
    assert config.keep_umask and not config.fork
    assert config.listen == ["unix:tmpdir=/tmp"]
    assert config.limits.auth_timeout == 240000
    assert config.limits.max_message_size == 1000000000
    assert config.limits.max_message_unix_fds == 16          # not overridden
    assert config.limits.max_containers == 10000             # session container defaults
    assert config.limits.max_connections_per_container == 16


@pytest.mark.parametrize("path", sorted(glob.glob("/usr/share/dbus-1/system.d/*.conf")
                                        + glob.glob("/etc/dbus-1/system.d/*.conf")
                                        + glob.glob("/usr/share/dbus-1/session.d/*.conf")))
def test_every_installed_policy_file_loads(path):
    config = load_config(path)
    assert config.files == [path]


def test_load_standard_reads_installed_or_builtin(tmp_path):
    system = load_standard("system")
    assert system.bus_type == "system"
    # With no file at the standard place the built-in copy is used and its
    # relative includedir resolves against that place (missing -> ignored).
    fallback = load_standard("system", config_dir=str(tmp_path))
    assert fallback.bus_type == "system"
    assert fallback.files[0] == str(tmp_path / "system.conf")
    assert not any(f.startswith(str(tmp_path / "system.d")) for f in fallback.files)
    assert fallback.user == "messagebus"
    session = load_standard("session", config_dir=str(tmp_path), environ={"HOME": "/h"})
    assert session.bus_type == "session"
    assert session.limits.max_replies_per_connection == 50000
    with pytest.raises(ValueError):
        load_standard("custom")


def test_builtin_copies_include_local_overrides():
    assert '<include ignore_missing="yes">/etc/dbus-1/session-local.conf</include>' in builtin.SESSION_CONF
    assert '<include ignore_missing="yes">/etc/dbus-1/system-local.conf</include>' in builtin.SYSTEM_CONF
    assert "<includedir>system.d</includedir>" in builtin.SYSTEM_CONF


def test_builtin_system_conf_reads_system_d_beside_it(tmp_path):
    write(tmp_path, "system.d/x.conf", """\
        <busconfig><policy context="default"><allow own="org.example"/></policy></busconfig>""")
    config = load_standard("system", config_dir=str(tmp_path))
    assert str(tmp_path / "system.d" / "x.conf") in config.files


# -- simple elements ----------------------------------------------------------

def test_all_simple_elements(tmp_path):
    config = parse(tmp_path, """\
        <busconfig>
          <type>custom.bus</type>
          <user>nobody</user>
          <fork/>
          <keep_umask/>
          <syslog/>
          <allow_anonymous/>
          <pidfile>/run/x.pid</pidfile>
          <listen>unix:path=/a</listen>
          <listen> tcp:host=localhost,port=0 </listen>
          <auth>EXTERNAL</auth>
          <auth>ANONYMOUS</auth>
          <servicedir>/srv/services</servicedir>
          <servicedir>relative/services</servicedir>
          <servicehelper>/usr/lib/helper</servicehelper>
          <limit name="max_message_size">4096</limit>
          <limit name="max_containers">3</limit>
        </busconfig>""")
    assert config.bus_type == "custom.bus"
    assert config.user == "nobody"
    assert config.fork and config.keep_umask and config.syslog and config.allow_anonymous
    assert config.pidfile == "/run/x.pid"
    assert config.listen == ["unix:path=/a", "tcp:host=localhost,port=0"]
    assert config.auth == ["EXTERNAL", "ANONYMOUS"]
    assert [d.path for d in config.servicedirs] == ["/srv/services",
                                                    str(tmp_path / "relative" / "services")]
    assert config.servicehelper == "/usr/lib/helper"
    assert config.limits.max_message_size == 4096
    assert config.limits.max_containers == 3
    assert config.limits.max_containers_per_user == 16  # not a session bus


def test_defaults_of_an_empty_config(tmp_path):
    config = parse(tmp_path, "<busconfig/>")
    assert config == BusConfig(files=[str(tmp_path / "bus.conf")])
    assert config.limits == Limits()


def test_later_single_values_win_and_lists_accumulate(tmp_path):
    config = parse(tmp_path, """\
        <busconfig>
          <type>system</type><user>a</user><pidfile>/1</pidfile>
          <type>session</type><user>b</user><pidfile>/2</pidfile>
          <limit name="auth_timeout">1</limit><limit name="auth_timeout">2</limit>
          <servicedir>/s</servicedir><servicedir>/s</servicedir>
        </busconfig>""")
    assert (config.bus_type, config.user, config.pidfile) == ("session", "b", "/2")
    assert config.limits.auth_timeout == 2
    assert [d.path for d in config.servicedirs] == ["/s"]
    assert config.limits.max_containers == 10000  # the type decides container defaults


def test_limits_defaults_cover_every_documented_limit():
    documented = {
        "max_incoming_bytes", "max_incoming_unix_fds", "max_outgoing_bytes",
        "max_outgoing_unix_fds", "max_message_size", "max_message_unix_fds",
        "service_start_timeout", "auth_timeout", "pending_fd_timeout",
        "max_completed_connections", "max_incomplete_connections",
        "max_connections_per_user", "max_pending_service_starts",
        "max_names_per_connection", "max_match_rules_per_connection",
        "max_replies_per_connection", "reply_timeout", "max_containers",
        "max_containers_per_user", "max_container_metadata_bytes",
        "max_connections_per_container", "max_container_queued_bytes", "max_container_unix_fds",
        "max_container_match_rules", "max_container_names", "max_container_pending_replies"}
    assert LIMIT_NAMES == documented
    system, session = Limits.defaults("system"), Limits.defaults("session")
    assert (system.max_containers, system.max_containers_per_user,
            system.max_container_metadata_bytes, system.max_connections_per_container) == (512, 16, 4096, 8)
    assert (session.max_containers, session.max_containers_per_user,
            session.max_container_metadata_bytes, session.max_connections_per_container) == (
        10000, 10000, 1000000000, 16)
    # per-instance quotas: one connection's worth of the bus type's per-connection limits
    assert (system.max_container_match_rules, system.max_container_names,
            system.max_container_pending_replies, system.max_container_unix_fds,
            system.max_container_queued_bytes) == (512, 512, 128, 64, 64 * 1024 * 1024)
    assert (session.max_container_match_rules, session.max_container_names,
            session.max_container_pending_replies) == (50000, 50000, 50000)
    assert system.max_incoming_bytes == 127 * 1024 * 1024
    assert system.auth_timeout == 5000 and system.reply_timeout == -1


def test_unknown_limit_warns_and_is_ignored(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sandbus.config"):
        config = parse(tmp_path, '<busconfig><limit name="max_bananas">3</limit></busconfig>')
    assert config.limit_overrides == {}
    assert "max_bananas" in caplog.text


@pytest.mark.parametrize("body, message", [
    ('<limit name="auth_timeout">soon</limit>', "not an integer"),
    ("<limit>5</limit>", '"name"'),
    ('<limit name="auth_timeout" extra="1">5</limit>', '"extra"'),
    ("<listen></listen>", "must not be empty"),
    ("<fork>yes</fork>", "no text allowed"),
    ('<fork really="yes"/>', '"really"'),
    ("<frobnicate/>", "unknown element"),
    ("<allow own='*'/>", "not allowed inside <busconfig>"),
    ("<type><user>x</user></type>", "not allowed inside <type>"),
    ('<apparmor mode="sometimes"/>', "mode"),
    ("<selinux><allow own='x'/></selinux>", "not allowed inside <selinux>"),
    ("<selinux><associate own='x'/></selinux>", '"context"'),
])
def test_invalid_elements_are_rejected(tmp_path, body, message):
    error = parse_error(tmp_path, f"<busconfig>\n{body}\n</busconfig>")
    assert message in str(error)
    assert f"{tmp_path / 'bus.conf'}:4:" in str(error)  # DOCTYPE takes two lines
    assert error.line == 4


def test_root_element_must_be_busconfig(tmp_path):
    error = parse_error(tmp_path, "<config/>")
    assert "<busconfig>" in str(error) and error.element == "config"


@pytest.mark.parametrize("body", [
    "<busconfig><policy context='default'></busconfig>",  # mismatched tag
    "<busconfig>",                                        # truncated
    "<busconfig><listen>a</listen></busconfig><extra/>",   # junk after root
    "",
])
def test_malformed_xml_names_file_and_line(tmp_path, body):
    error = parse_error(tmp_path, body)
    assert str(tmp_path / "bus.conf") in str(error)
    assert error.line is not None
    assert "malformed XML" in str(error) or "no root" in str(error)


def test_malformed_xml_error_names_element(tmp_path):
    error = parse_error(tmp_path, "<busconfig>\n<policy context='default'>\n<allow own='x'>\n</policy>")
    assert error.element == "allow"
    assert ":6: <allow>:" in str(error)  # where expat noticed


def test_selinux_and_apparmor_are_accepted_and_logged(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="sandbus.config"):
        config = parse(tmp_path, """\
            <busconfig>
              <selinux><associate own="org.foo" context="foo_t"/></selinux>
              <apparmor mode="required"/>
            </busconfig>""")
    assert config.apparmor_mode == "required"
    assert "<selinux> ignored" in caplog.text
    assert "apparmor" in caplog.text and "ignored" in caplog.text


# -- servicedirs --------------------------------------------------------------

def test_standard_session_servicedirs_order():
    dirs = standard_session_servicedirs({
        "XDG_RUNTIME_DIR": "/run/user/1", "XDG_DATA_HOME": "/h/data",
        "XDG_DATA_DIRS": "/a:/b"})
    assert dirs == [
        ServiceDir("/run/user/1/dbus-1/services", strict_naming=True, watched=False),
        ServiceDir("/h/data/dbus-1/services"),
        ServiceDir("/a/dbus-1/services"),
        ServiceDir("/b/dbus-1/services"),
        ServiceDir("/usr/share/dbus-1/services"),
    ]


def test_standard_session_servicedirs_defaults_deduplicated(tmp_path):
    config = parse(tmp_path, "<busconfig><standard_session_servicedirs/></busconfig>")
    paths = [d.path for d in config.servicedirs]
    assert paths[-2:] == ["/usr/local/share/dbus-1/services", "/usr/share/dbus-1/services"]
    assert len(paths) == len(set(paths))
    defaults = standard_session_servicedirs({"HOME": "/home/u"})
    assert [d.path for d in defaults] == [
        "/home/u/.local/share/dbus-1/services", "/usr/local/share/dbus-1/services",
        "/usr/share/dbus-1/services", "/usr/share/dbus-1/services"]


def test_standard_system_servicedirs():
    assert [d.path for d in standard_system_servicedirs()][0] == "/usr/local/share/dbus-1/system-services"
    assert "/lib/dbus-1/system-services" in [d.path for d in standard_system_servicedirs()]


# -- include / includedir -----------------------------------------------------

def test_include_relative_to_including_file_and_merge_order(tmp_path):
    write(tmp_path, "sub/inner.conf", """\
        <busconfig>
          <type>session</type>
          <listen>unix:path=/inner</listen>
          <limit name="auth_timeout">7</limit>
          <policy context="default"><allow own="inner"/></policy>
        </busconfig>""")
    config = parse(tmp_path, """\
        <busconfig>
          <type>system</type>
          <listen>unix:path=/before</listen>
          <limit name="auth_timeout">1</limit>
          <policy context="default"><allow own="before"/></policy>
          <include>sub/inner.conf</include>
          <listen>unix:path=/after</listen>
          <policy context="default"><allow own="after"/></policy>
        </busconfig>""")
    assert config.bus_type == "session"
    assert config.listen == ["unix:path=/before", "unix:path=/inner", "unix:path=/after"]
    assert config.limits.auth_timeout == 7
    assert [p.rules[0].own_name for p in config.policies] == ["before", "inner", "after"]
    assert config.files == [str(tmp_path / "bus.conf"), str(tmp_path / "sub" / "inner.conf")]


def test_nested_include_is_relative_to_its_own_file(tmp_path):
    write(tmp_path, "a/b/leaf.conf", "<busconfig><user>leaf</user></busconfig>")
    write(tmp_path, "a/mid.conf", "<busconfig><include>b/leaf.conf</include></busconfig>")
    config = parse(tmp_path, "<busconfig><include>a/mid.conf</include></busconfig>")
    assert config.user == "leaf"


def test_missing_include(tmp_path):
    config = parse(tmp_path, '<busconfig><include ignore_missing="yes">nope.conf</include></busconfig>')
    assert config.files == [str(tmp_path / "bus.conf")]
    error = parse_error(tmp_path, "<busconfig>\n<include>nope.conf</include></busconfig>")
    assert "does not exist" in str(error) and ":4: <include>:" in str(error)
    error = parse_error(tmp_path, '<busconfig><include ignore_missing="maybe">x</include></busconfig>')
    assert "ignore_missing" in str(error)


def test_selinux_includes_are_skipped(tmp_path):
    config = parse(tmp_path, """\
        <busconfig>
          <include if_selinux_enabled="yes" selinux_root_relative="yes">contexts/dbus_contexts</include>
          <include selinux_root_relative="yes">contexts/other</include>
        </busconfig>""")
    assert len(config.files) == 1


def test_error_in_included_file_names_that_file(tmp_path):
    inner = write(tmp_path, "inner.conf", "<busconfig>\n<bogus/>\n</busconfig>")
    error = parse_error(tmp_path, "<busconfig><include>inner.conf</include></busconfig>")
    assert error.file == inner and error.line == 4 and error.element == "bogus"


def test_circular_include_is_refused(tmp_path):
    write(tmp_path, "other.conf", "<busconfig><include>bus.conf</include></busconfig>")
    error = parse_error(tmp_path, "<busconfig><include>other.conf</include></busconfig>")
    assert "circular" in str(error)


def test_includedir_sorted_conf_files_only(tmp_path):
    for name in ("b.conf", "a.conf", "c.conf"):
        write(tmp_path, f"d/{name}", f"<busconfig><listen>{name}</listen></busconfig>")
    write(tmp_path, "d/z.conf.bak", "not xml at all")
    os.makedirs(tmp_path / "d" / "dir.conf")
    config = parse(tmp_path, """\
        <busconfig>
          <includedir>d</includedir>
          <includedir>/nonexistent/dbus-1/system.d</includedir>
        </busconfig>""")
    assert config.listen == ["a.conf", "b.conf", "c.conf"]


def test_includedir_with_broken_file_fails(tmp_path):
    write(tmp_path, "d/bad.conf", "<busconfig>")
    with pytest.raises(ConfigError):
        parse(tmp_path, "<busconfig><includedir>d</includedir></busconfig>")


def test_load_config_text_anchors_relative_paths(tmp_path):
    write(tmp_path, "x.conf", "<busconfig><user>x</user></busconfig>")
    config = load_config_text("<busconfig><include>x.conf</include></busconfig>",
                              str(tmp_path / "virtual.conf"))
    assert config.user == "x"


def test_unreadable_main_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "missing.conf")
    assert "missing.conf" in str(info.value)


# -- XML safety ---------------------------------------------------------------

def test_external_entity_is_never_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-42")
    path = write(tmp_path, "evil.conf", f"""\
        <?xml version="1.0"?>
        <!DOCTYPE busconfig [
          <!ENTITY xxe SYSTEM "file://{secret}">
        ]>
        <busconfig><user>&xxe;</user></busconfig>""", doctype=False)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "TOPSECRET" not in str(info.value)


def test_external_entity_reference_without_declaration_is_not_expanded(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-43")
    path = write(tmp_path, "evil.conf", f"""\
        <?xml version="1.0"?>
        <!DOCTYPE busconfig SYSTEM "file://{secret}">
        <busconfig><user>&xxe;</user></busconfig>""", doctype=False)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "TOPSECRET" not in str(info.value)


def test_parameter_entities_and_entity_expansion_are_refused(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET-44")
    path = write(tmp_path, "evil.conf", f"""\
        <?xml version="1.0"?>
        <!DOCTYPE busconfig [
          <!ENTITY % remote SYSTEM "file://{secret}">
          %remote;
          <!ENTITY lol "lol">
        ]>
        <busconfig><user>&lol;</user></busconfig>""", doctype=False)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "TOPSECRET" not in str(info.value)


def test_internal_entity_declarations_are_refused(tmp_path):
    path = write(tmp_path, "laughs.conf", """\
        <?xml version="1.0"?>
        <!DOCTYPE busconfig [
          <!ENTITY a "aaaaaaaaaa">
          <!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
        ]>
        <busconfig><user>&b;</user></busconfig>""", doctype=False)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "entity" in str(info.value)


def test_standard_doctype_is_accepted_without_fetching(tmp_path):
    # write() prefixes the stock DOCTYPE, whose DTD URL must not be fetched.
    config = parse(tmp_path, "<busconfig><type>session</type></busconfig>")
    assert config.bus_type == "session"
