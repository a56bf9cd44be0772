"""What a Spawn'd sibling may have (launcher/portal.py narrowed_options):
what was asked for and the app has, never more."""

import pytest

from sandbus.launcher import portal as P
from sandbus.launcher.options import parse_run_args


def parent(*args):
    return parse_run_args([*args, "--", "app"])


@pytest.mark.parametrize("args, flags, sandbox_flags, share, sockets, devices", [
    # asked and held
    (["--share=network"], 0, 0, {"network"}, set(), set()),
    (["--share=network", "--share=ipc"], 0, P.SHARE_SHM, {"network", "ipc"}, set(), set()),
    (["--socket=wayland", "--socket=pulseaudio"], 0, P.SHARE_DISPLAY | P.SHARE_SOUND, set(),
     {"wayland", "pulseaudio"}, set()),
    (["--device=dri"], 0, P.SHARE_GPU, set(), set(), {"dri"}),
    (["--device=all"], 0, P.SHARE_GPU | P.SHARE_DEVICES, set(), set(), {"dri", "all"}),
    # held, not asked
    (["--share=network"], P.NO_NETWORK, 0, set(), set(), set()),
    (["--share=ipc", "--socket=x11", "--device=all"], 0, 0, set(), set(), set()),
    # asked, not held
    ([], 0, P.SHARE_SHM | P.SHARE_DISPLAY | P.SHARE_SOUND | P.SHARE_GPU | P.SHARE_DEVICES, set(), set(), set()),
    (["--device=dri"], 0, P.SHARE_DEVICES, set(), set(), set()),
    (["--socket=wayland"], 0, P.SHARE_SOUND, set(), set(), set()),
    # input, USB, KVM: only as all of /dev, which is wider than asked
    (["--device=all"], 0, P.SHARE_INPUT | P.SHARE_USB | P.SHARE_KVM, set(), set(), set()),
])
def test_a_sibling_gets_the_intersection(args, flags, sandbox_flags, share, sockets, devices):
    child = P.narrowed_options(parent(*args), flags | P.SANDBOX, sandbox_flags, ["cmd"])
    assert (child.share, child.sockets, child.devices) == (share, sockets, devices)
    assert child.filesystems == [] and child.persist == [] and child.command == ["cmd"]


def test_a_siblings_bus_rules_are_within_the_apps():
    from sandbus.containers.nesting import first_uncovered
    app = parent("--talk-name=org.example.X", "--own-name=org.example.Y")
    child = P.narrowed_options(app, P.SANDBOX, P.ALLOW_DBUS, ["cmd"])
    assert first_uncovered(child.allow_rules(), app.allow_rules()) is None
    # and fewer: the app's talk and own names are not the child's
    assert first_uncovered(app.allow_rules(), child.allow_rules()) is not None
