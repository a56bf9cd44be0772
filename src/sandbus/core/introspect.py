"""Introspection XML of the bus driver, in dbus-daemon's layout."""

_DOCTYPE = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
            '"http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')

# interface -> list of ("method", name, [in types], [out types]) /
# ("signal", name, [types]) / ("property", name, type)
_CONST = '      <annotation name="org.freedesktop.DBus.Property.EmitsChangedSignal" value="const"/>\n'

INTERFACES = {
    "org.freedesktop.DBus": [
        ("method", "Hello", [], ["s"]),
        ("method", "RequestName", ["s", "u"], ["u"]),
        ("method", "ReleaseName", ["s"], ["u"]),
        ("method", "StartServiceByName", ["s", "u"], ["u"]),
        ("method", "UpdateActivationEnvironment", ["a{ss}"], []),
        ("method", "NameHasOwner", ["s"], ["b"]),
        ("method", "ListNames", [], ["as"]),
        ("method", "ListActivatableNames", [], ["as"]),
        ("method", "AddMatch", ["s"], []),
        ("method", "RemoveMatch", ["s"], []),
        ("method", "GetNameOwner", ["s"], ["s"]),
        ("method", "ListQueuedOwners", ["s"], ["as"]),
        ("method", "GetConnectionUnixUser", ["s"], ["u"]),
        ("method", "GetConnectionUnixProcessID", ["s"], ["u"]),
        ("method", "GetAdtAuditSessionData", ["s"], ["ay"]),
        ("method", "GetConnectionSELinuxSecurityContext", ["s"], ["ay"]),
        ("method", "ReloadConfig", [], []),
        ("method", "GetId", [], ["s"]),
        ("method", "GetConnectionCredentials", ["s"], ["a{sv}"]),
        ("property", "Features", "as"),
        ("property", "Interfaces", "as"),
        ("signal", "NameOwnerChanged", ["s", "s", "s"]),
        ("signal", "NameLost", ["s"]),
        ("signal", "NameAcquired", ["s"]),
        ("signal", "ActivatableServicesChanged", []),
    ],
    "org.freedesktop.DBus.Properties": [
        ("method", "Get", ["s", "s"], ["v"]),
        ("method", "GetAll", ["s"], ["a{sv}"]),
        ("method", "Set", ["s", "s", "v"], []),
        ("signal_named", "PropertiesChanged",
         [("s", "interface_name"), ("a{sv}", "changed_properties"), ("as", "invalidated_properties")]),
    ],
    "org.freedesktop.DBus.Introspectable": [
        ("method", "Introspect", [], ["s"]),
    ],
    "org.freedesktop.DBus.Monitoring": [
        ("method", "BecomeMonitor", ["as", "u"], []),
    ],
    "org.freedesktop.DBus.Debug.Stats": [
        ("method", "GetStats", [], ["a{sv}"]),
        ("method", "GetConnectionStats", ["s"], ["a{sv}"]),
        ("method", "GetAllMatchRules", [], ["a{sas}"]),
    ],
    "org.freedesktop.DBus.Containers1": [
        ("method", "AddServer", ["s", "s", "a{sv}", "a{sv}"], ["o", "ay", "s"]),
        ("method", "StopListening", ["o"], []),
        ("method", "StopInstance", ["o"], []),
        ("method", "GetInstanceInfo", ["o"], ["a{sv}", "s", "s", "a{sv}"]),
        ("method", "GetConnectionInstance", ["s"], ["o", "a{sv}", "s", "s", "a{sv}"]),
        ("method", "RequestHeader", [], []),
        ("method", "GrantAccess", ["o", "a(uos)"], []),
        ("method", "RevokeAccess", ["o", "a(uos)"], []),
        ("method", "ListInstances", [], ["a(osssub)"]),
        ("method", "GetLearnedRules", ["o"], ["a(usos)", "as"]),
        ("property", "SupportedArguments", "as"),
        ("property", "SupportedAccessFlags", "a{su}"),
        ("signal", "InstanceRemoved", ["o"]),
    ],
    "org.freedesktop.DBus.Peer": [
        ("method", "GetMachineId", [], ["s"]),
        ("method", "Ping", [], []),
    ],
}

_ALWAYS = ["org.freedesktop.DBus", "org.freedesktop.DBus.Properties", "org.freedesktop.DBus.Introspectable"]


def _interface_xml(name: str, members) -> str:
    out = [f'  <interface name="{name}">\n']
    for item in members:
        kind = item[0]
        if kind == "method":
            _, mname, ins, outs = item
            out.append(f'    <method name="{mname}">\n')
            out.extend(f'      <arg direction="in" type="{t}"/>\n' for t in ins)
            out.extend(f'      <arg direction="out" type="{t}"/>\n' for t in outs)
            out.append("    </method>\n")
        elif kind == "property":
            _, pname, ptype = item
            out.append(f'    <property name="{pname}" type="{ptype}" access="read">\n{_CONST}    </property>\n')
        elif kind == "signal":
            _, sname, types = item
            out.append(f'    <signal name="{sname}">\n')
            out.extend(f'      <arg type="{t}"/>\n' for t in types)
            out.append("    </signal>\n")
        else:
            _, sname, named = item
            out.append(f'    <signal name="{sname}">\n')
            out.extend(f'      <arg type="{t}" name="{n}"/>\n' for t, n in named)
            out.append("    </signal>\n")
    out.append("  </interface>\n")
    return "".join(out)


def driver_introspection(extra_interfaces, path: str = "/org/freedesktop/DBus") -> str:
    """XML for the driver object; extra_interfaces are the optional ones enabled."""
    parts = [_DOCTYPE, "<node>\n"]
    names = _ALWAYS + [i for i in INTERFACES if i not in _ALWAYS and i != "org.freedesktop.DBus.Peer"
                       and i in extra_interfaces] + ["org.freedesktop.DBus.Peer"]
    if path == "/org/freedesktop/DBus":
        for name in names:
            parts.append(_interface_xml(name, INTERFACES[name]))
    else:
        for name in ("org.freedesktop.DBus", "org.freedesktop.DBus.Properties",
                     "org.freedesktop.DBus.Introspectable", "org.freedesktop.DBus.Peer"):
            parts.append(_interface_xml(name, INTERFACES[name]))
        child = _child_towards(path, "/org/freedesktop/DBus")
        if child:
            parts.append(f'  <node name="{child}"/>\n')
    parts.append("</node>\n")
    return "".join(parts)


def _child_towards(path: str, target: str):
    prefix = "/" if path == "/" else path + "/"
    if target.startswith(prefix):
        return target[len(prefix):].split("/")[0]
    return None
