"""Type signatures: validity, splitting into complete types, spec limits."""

import pytest

from sandbus.wire.signature import (
    MAX_SIGNATURE_LENGTH,
    SignatureError,
    is_single_complete_type,
    is_valid_signature,
    split_signature,
)


@pytest.mark.parametrize("sig,types", [
    ("", ()),
    ("y", ("y",)),
    ("ybnqiuxtdhsogv", tuple("ybnqiuxtdhsogv")),
    ("as", ("as",)),
    ("aas", ("aas",)),
    ("a{sv}", ("a{sv}",)),
    ("a{sa{sv}}s", ("a{sa{sv}}", "s")),
    ("(i)", ("(i)",)),
    ("(i(ss)v)u", ("(i(ss)v)", "u")),
    ("a(usos)", ("a(usos)",)),
    ("sa{sv}as", ("s", "a{sv}", "as")),
    ("a{y(ii)}", ("a{y(ii)}",)),
    ("a{oa{sa{sv}}}", ("a{oa{sa{sv}}}",)),
    ("a{hd}", ("a{hd}",)),
    ("a{gv}", ("a{gv}",)),
    ("aay", ("aay",)),
])
def test_valid_signatures_split(sig, types):
    assert split_signature(sig) == types
    assert is_valid_signature(sig)


@pytest.mark.parametrize("sig", [
    "a",            # array without element type
    "aa",
    "(",            # unclosed struct
    "(ii",
    ")",            # stray close
    "ii)",
    "()",           # empty struct
    "{sv}",         # dict entry outside an array
    "a{vs}",        # key is not basic
    "a{(i)s}",
    "a{asv}",
    "a{s}",         # dict entry with one type
    "a{svs}",       # dict entry with three types
    "a{}",
    "a{sv",         # unclosed dict entry
    "z",            # unknown type code
    "r", "e", "m", "*", "?", "@", "&", "^",  # reserved codes
    " ",
    "s\0",
    "(i}",
    "a{s(i})",
])
def test_invalid_signatures(sig):
    assert not is_valid_signature(sig)
    with pytest.raises(SignatureError):
        split_signature(sig)


def test_length_limit_255_bytes():
    assert is_valid_signature("y" * MAX_SIGNATURE_LENGTH)
    assert MAX_SIGNATURE_LENGTH == 255
    assert not is_valid_signature("y" * 256)
    assert not is_valid_signature("a{sv}" * 51 + "y")  # 256 bytes of valid types


def test_array_nesting_limit_32():
    assert is_valid_signature("a" * 32 + "y")
    assert not is_valid_signature("a" * 33 + "y")


def test_struct_nesting_limit_32():
    assert is_valid_signature("(" * 32 + "y" + ")" * 32)
    assert not is_valid_signature("(" * 33 + "y" + ")" * 33)


def test_array_and_struct_limits_are_separate():
    # 32 arrays around 32 structs: 64 containers, both limits just met
    sig = "a" * 32 + "(" * 32 + "y" + ")" * 32
    assert len(sig) <= 255
    assert is_valid_signature(sig)
    assert not is_valid_signature("a" + sig)
    assert not is_valid_signature("a" * 32 + "(" * 33 + "y" + ")" * 33)


def test_dict_entries_count_as_structs_and_arrays():
    # Each a{..} adds one array and one struct (dict entry) level.
    ok = "a{s" * 32 + "y" + "}" * 32
    assert len(ok) <= 255
    assert is_valid_signature(ok)
    too_deep = "a{s" * 33 + "y" + "}" * 33
    assert not is_valid_signature(too_deep)
    # 31 structs inside one dict entry is fine, 32 is one too many
    assert is_valid_signature("a{s" + "(" * 31 + "y" + ")" * 31 + "}")
    assert not is_valid_signature("a{s" + "(" * 32 + "y" + ")" * 32 + "}")


def test_nesting_depth_counts_per_branch_not_per_signature():
    # Many sibling containers are fine: depth, not count, is limited.
    sig = "(y)" * 80
    assert is_valid_signature(sig)
    assert len(split_signature(sig)) == 80


@pytest.mark.parametrize("sig,single", [
    ("s", True), ("a{sv}", True), ("(ii)", True), ("v", True),
    ("ss", False), ("", False), ("a", False), ("(", False),
])
def test_single_complete_type(sig, single):
    assert is_single_complete_type(sig) is single


def test_non_ascii_signature_rejected():
    assert not is_valid_signature("é")
