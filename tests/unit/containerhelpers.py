"""Socket-free Containers1: a bus put together as daemon.py does it
(ContainerManager, then the mediation chain of the access rules and the
XML policy), with a fake of io/container_sockets.py so that AddServer,
StopListening and the notification pipes work without sockets, and
clients that connect "through" an instance's listener as the io layer
(io/server.py) does."""

import os

from corehelpers import BUS_IFACE, BUS_NAME, BUS_PATH, Client, FakeSink, FakeSpawner, connect, make_bus
from sandbus.config import Policy, load_config_text
from sandbus.config.services import ServiceCache
from sandbus.core.activation import Activation
from sandbus.containers.manager import ContainerManager
from sandbus.core.mediation import Mediation
from sandbus.core.policy import PolicyEnforcer
from sandbus.wire.marshal import Variant, unmarshal

CIFACE = "org.freedesktop.DBus.Containers1"

# An XML policy that allows everything (the integration tests' MINIMAL_CONFIG):
# whatever is refused below is refused by the containers' access rules.
OPEN_POLICY = """<busconfig>
  <type>session</type>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>"""


class FakeListener:
    """What io/listener.py's Listener offers the containers layer."""

    def __init__(self, path=None):
        self.path = path  # None for an adopted socket
        self.container = None
        self.allowed_uid = None
        self.accepting = False
        self.closed = False

    def address(self, guid: str) -> str:
        where = f"path={self.path}" if self.path else "abstract=passed"
        return f"unix:{where},guid={guid}"


class FakeSockets:
    """io/container_sockets.py's contract (default_directory, create,
    adopt, check_notification_fd, start, stop, watch) without sockets;
    ``fire(fd)`` plays a notification pipe becoming readable; fds in
    ``unwatchable`` play regular files and write ends."""

    def __init__(self):
        self.made = 0
        self.listeners = []
        self.watches = []  # [fd, callback, once, active]
        self.fail_create = None  # an OSError to raise from create
        self.fail_adopt = None  # a ValueError to raise from adopt (not a listening stream socket)
        self.unwatchable = set()  # fds check_notification_fd refuses

    @staticmethod
    def default_directory(bus_type: str) -> str:
        return "/run/dbus/containers" if bus_type == "system" else "/fake-runtime/dbus-1/containers"

    def create(self, directory: str) -> FakeListener:
        if self.fail_create is not None:
            raise self.fail_create
        self.made += 1
        listener = FakeListener(f"{directory}/dbus-{self.made:020x}")
        self.listeners.append(listener)
        return listener

    def adopt(self, fd: int) -> FakeListener:
        if self.fail_adopt is not None:
            raise self.fail_adopt
        listener = FakeListener(None)
        self.listeners.append(listener)
        return listener

    def check_notification_fd(self, fd: int, what: str) -> None:
        if fd in self.unwatchable:
            raise ValueError(f"{what} must be the read end of a pipe or FIFO, or a socket")

    def start(self, listener) -> None:
        listener.accepting = True

    def stop(self, listener) -> None:
        listener.accepting = False
        listener.closed = True

    def watch(self, fd: int, callback, once: bool = True):
        w = [fd, callback, once, True]
        self.watches.append(w)

        def cancel():
            w[3] = False
        return cancel

    def fire(self, fd: int) -> None:
        for w in list(self.watches):
            if w[0] == fd and w[3]:
                if w[2]:
                    w[3] = False
                w[1]()


class _NoTimer:
    def cancel(self):
        pass


class PidfdSink(FakeSink):
    """A sink whose process has a pidfd (io/connection.py fetches one on
    demand for GetConnectionCredentials)."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd

    def pidfd(self):
        return self.fd


class ContainerBus:
    def __init__(self, policy_xml: str = OPEN_POLICY, **limits):
        self.bus = make_bus(**limits)
        self.sockets = FakeSockets()
        # as daemon.py: the manager adds its driver rows, the access rules
        # come first in the mediation chain, the XML policy second
        self.manager = ContainerManager(self.bus, self.sockets)
        self.access = self.manager.access
        self.policy = PolicyEnforcer(Policy(load_config_text(policy_xml, "<unit test>"), bus_uid=os.getuid()),
                                     self.bus)
        self.bus.set_mediation(Mediation([self.access, self.policy]))

    def with_activation(self, directory, *names) -> FakeSpawner:
        """Make names activatable (.service files in directory); returns the
        spawner that records what activation starts."""
        for name in names:
            (directory / f"{name}.service").write_text(f"[D-BUS Service]\nName={name}\nExec=/usr/bin/{name}\n")
        spawner = FakeSpawner()
        self.bus.call_later = lambda delay, fn, *args: _NoTimer()
        self.bus.settings.activation = Activation(self.bus, ServiceCache.loaded([str(directory)]), spawner,
                                                  environ={"PATH": "/bin"}, address="unix:path=/x,guid=1")
        return spawner

    def client(self, **kw) -> Client:
        return connect(self.bus, **kw)

    def add_server(self, creator: Client, rules=None, *, ctype="com.example.App", name="app", metadata=None,
                   learn=False, **named):
        """AddServer through Bus.receive; rules (a(usos)) make the instance
        mediated, named holds further named arguments as Variants.
        Returns the ContainerInstance."""
        args = dict(named)
        if rules is not None:
            args["Allow"] = Variant("a(usos)", [tuple(r) for r in rules])
        if learn:
            args["Learn"] = Variant("b", True)
        path, socket_path, address = creator.bus_ok("AddServer", "ssa{sv}a{sv}",
                                                    (ctype, name, metadata or {}, args), interface=CIFACE)
        inst = self.manager.instances[path]
        assert inst.listener is not None and address == inst.listener.address(self.bus.settings.guid)
        return inst

    def join(self, inst, *, hello=True, **kw) -> Client:
        """A connection through inst's listener, counted as io/server.py
        counts it (admit_connection at accept, then Bus.connect)."""
        assert inst.listener is not None and inst.listener.accepting, "the instance is not accepting"
        assert inst.admit_connection(), "MaxConnections reached"
        c = Client(self.bus, listener=inst.listener, **kw)
        if hello:
            c.hello()
            c.clear()
        return c

    def ccall(self, client: Client, member, signature="", body=(), **kw):
        """A Containers1 call; its reply (return or error)."""
        return client.bus_call(member, signature, body, interface=CIFACE, **kw)


def make_container_bus(policy_xml: str = OPEN_POLICY, **limits) -> ContainerBus:
    return ContainerBus(policy_xml, **limits)


def header_fields(data: bytes) -> dict:
    """All header fields of a message as received, by code (including
    CONTAINER_INSTANCE, 10, which Message does not keep)."""
    endian = chr(data[0])
    fields_len = int.from_bytes(data[12:16], "little" if endian == "l" else "big")
    fields = unmarshal("yyyyuua(yv)", data, endian, 0, 16 + fields_len)[6]
    return {code: v.value for code, v in fields}


__all__ = ["BUS_IFACE", "BUS_NAME", "BUS_PATH", "CIFACE", "ContainerBus", "FakeListener", "FakeSockets",
           "OPEN_POLICY", "PidfdSink", "header_fields", "make_container_bus"]
