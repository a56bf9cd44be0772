"""D-Bus error names the bus answers with, and the exception that carries one."""

PREFIX = "org.freedesktop.DBus.Error."
FAILED = PREFIX + "Failed"
NO_MEMORY = PREFIX + "NoMemory"
SERVICE_UNKNOWN = PREFIX + "ServiceUnknown"
NAME_HAS_NO_OWNER = PREFIX + "NameHasNoOwner"
NO_REPLY = PREFIX + "NoReply"
ACCESS_DENIED = PREFIX + "AccessDenied"
INVALID_ARGS = PREFIX + "InvalidArgs"
UNKNOWN_METHOD = PREFIX + "UnknownMethod"
UNKNOWN_INTERFACE = PREFIX + "UnknownInterface"
UNKNOWN_PROPERTY = PREFIX + "UnknownProperty"
PROPERTY_READ_ONLY = PREFIX + "PropertyReadOnly"
LIMITS_EXCEEDED = PREFIX + "LimitsExceeded"
MATCH_RULE_INVALID = PREFIX + "MatchRuleInvalid"
MATCH_RULE_NOT_FOUND = PREFIX + "MatchRuleNotFound"
NOT_SUPPORTED = PREFIX + "NotSupported"
SPAWN_SERVICE_NOT_FOUND = PREFIX + "Spawn.ServiceNotFound"
SELINUX_CONTEXT_UNKNOWN = PREFIX + "SELinuxSecurityContextUnknown"
ADT_AUDIT_DATA_UNKNOWN = PREFIX + "AdtAuditDataUnknown"
UNIX_PROCESS_ID_UNKNOWN = PREFIX + "UnixProcessIdUnknown"
NOT_CONTAINER = PREFIX + "NotContainer"
TIMEOUT = PREFIX + "Timeout"


def service_unknown(name: str) -> "DBusError":
    """dbus-daemon's answer for a name no one owns and no .service file
    provides.  One place, because a hidden name must get it byte for byte."""
    return DBusError(SERVICE_UNKNOWN, f"The name {name} was not provided by any .service files")


class DBusError(Exception):
    """Raised by bus code to answer the current method call with an error."""

    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.name = name
        self.message = message
