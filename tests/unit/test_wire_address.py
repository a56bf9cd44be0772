"""D-Bus server addresses: parsing, %-escaping, formatting."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandbus.wire.address import AddressError, escape_value, format_address, parse_addresses


def test_single_unix_path():
    assert parse_addresses("unix:path=/tmp/bus") == [("unix", {"path": "/tmp/bus"})]


def test_several_keys_and_guid():
    text = "unix:path=/run/user/1000/bus,guid=0123456789abcdef0123456789abcdef"
    assert parse_addresses(text) == [
        ("unix", {"path": "/run/user/1000/bus", "guid": "0123456789abcdef0123456789abcdef"})]


def test_address_list():
    text = "unix:abstract=/tmp/dbus-x;tcp:host=localhost,port=1234;unix:path=/a"
    assert parse_addresses(text) == [
        ("unix", {"abstract": "/tmp/dbus-x"}),
        ("tcp", {"host": "localhost", "port": "1234"}),
        ("unix", {"path": "/a"}),
    ]


def test_empty_entries_and_trailing_semicolon_ignored():
    assert parse_addresses(";unix:path=/a;;") == [("unix", {"path": "/a"})]


def test_transport_without_keys():
    assert parse_addresses("autolaunch:") == [("autolaunch", {})]


@pytest.mark.parametrize("text,value", [
    ("unix:path=/tmp/a%20b", "/tmp/a b"),
    ("unix:path=/tmp/%2c%3b%3d", "/tmp/,;="),
    ("unix:path=%2Ftmp", "/tmp"),            # upper or lower case hex
    ("unix:path=/tmp/%c3%a9", "/tmp/é"),     # escaped UTF-8
    ("unix:path=/tmp/%25", "/tmp/%"),
])
def test_percent_escapes_decoded(text, value):
    assert parse_addresses(text)[0][1]["path"] == value


@pytest.mark.parametrize("text", [
    "",
    ";",
    "nocolon",
    ":path=/a",              # empty transport
    "unix:path",             # key without value
    "unix:=/a",              # value without key
    "unix:path=/a,",         # trailing comma: empty pair
    "unix:path=/a,path=/b",  # repeated key
    "unix:path=/a%2",        # truncated escape
    "unix:path=/a%zz",       # bad hex
    "unix:path=%",
])
def test_invalid_addresses(text):
    with pytest.raises(AddressError):
        parse_addresses(text)


def test_escape_value_leaves_optionally_escaped_bytes():
    assert escape_value("/tmp/abc-XYZ_0.9\\*") == "/tmp/abc-XYZ_0.9\\*"


@pytest.mark.parametrize("value,escaped", [
    (" ", "%20"), (",", "%2c"), (";", "%3b"), ("=", "%3d"), ("%", "%25"), (":", "%3a"),
    ("é", "%c3%a9"), ("\n", "%0a"),
])
def test_escape_value_escapes_the_rest(value, escaped):
    assert escape_value(value) == escaped


def test_format_address():
    assert format_address("unix", {"path": "/tmp/a b", "guid": "00ff"}) == "unix:path=/tmp/a%20b,guid=00ff"


@settings(max_examples=100, deadline=None)
@given(transport=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=8),
       params=st.dictionaries(st.text(alphabet="abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=6),
                              st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=20),
                              max_size=4))
def test_format_then_parse_round_trip(transport, params):
    text = format_address(transport, params)
    assert parse_addresses(text) == [(transport, params)]
    # and inside a list
    assert parse_addresses(text + ";" + text) == [(transport, params), (transport, params)]
