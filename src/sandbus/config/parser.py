"""Read dbus-daemon XML configuration files into a :class:`BusConfig`.

Included files are processed in place, into the same ``BusConfig``, which
gives exactly dbus-daemon's merge rules: single-valued settings (type, user,
pidfile, servicehelper) are won by the last one read, lists (listen, auth,
servicedirs, policies) accumulate in reading order, flags (fork, syslog, ...)
once set stay set, and later <limit>s replace earlier ones.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from . import builtin
from .model import LIMIT_NAMES, BusConfig, ConfigError, PolicyBlock, SourceLocation, ServiceDir
from .rules import RuleError, build_rule
from .servicedirs import standard_session_servicedirs, standard_system_servicedirs
from .xmlreader import Element, parse_xml

log = logging.getLogger("sandbus.config")

STANDARD_CONFIG_DIR = "/usr/share/dbus-1"

# Elements whose content is a value; the rest may only contain whitespace.
TEXT_ELEMENTS = frozenset({
    "type", "user", "listen", "pidfile", "auth", "servicedir", "servicehelper",
    "include", "includedir", "limit",
})
ALLOWED_ATTRIBUTES: dict[str, frozenset[str]] = {
    "include": frozenset({"ignore_missing", "if_selinux_enabled", "selinux_root_relative"}),
    "policy": frozenset({"context", "user", "group", "at_console"}),
    "limit": frozenset({"name"}),
    "apparmor": frozenset({"mode"}),
    "associate": frozenset({"own", "context"}),
}
POLICY_CHILDREN = frozenset({"allow", "deny"})
SELINUX_CHILDREN = frozenset({"associate"})


class _Reader:
    """Walks element trees into one BusConfig, following includes."""

    def __init__(self, config: BusConfig, environ: dict[str, str] | None):
        self.config = config
        self.environ = environ
        # Real paths of the files being read, to refuse circular inclusion.
        self.include_stack: list[str] = []

    # -- files --------------------------------------------------------------

    def read_file(self, path: str) -> None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ConfigError(f"cannot read configuration file: {exc.strerror}",
                              file=path) from None
        self.read_document(data, path)

    def read_document(self, data: bytes | str, path: str) -> None:
        real = os.path.realpath(path)
        if real in self.include_stack:
            raise ConfigError("circular inclusion of configuration file", file=path)
        root = parse_xml(data, path)
        if root.name != "busconfig":
            raise ConfigError(f"root element must be <busconfig>, not <{root.name}>",
                              file=path, line=root.line, element=root.name)
        self.config.files.append(path)
        self.include_stack.append(real)
        try:
            self._check_shape(root, path, allowed_attributes=frozenset())
            for child in root.children:
                self._busconfig_child(child, path)
        finally:
            self.include_stack.pop()

    # -- helpers ------------------------------------------------------------

    @staticmethod
    def _error(message: str, path: str, element: Element) -> ConfigError:
        return ConfigError(message, file=path, line=element.line, element=element.name)

    def _check_shape(self, element: Element, path: str,
                     allowed_attributes: frozenset[str] | None = None) -> None:
        """Refuse unknown attributes, stray text and unexpected children."""
        if allowed_attributes is None:
            allowed_attributes = ALLOWED_ATTRIBUTES.get(element.name, frozenset())
        for name in element.attributes:
            if name not in allowed_attributes:
                raise self._error(f'attribute "{name}" is invalid on <{element.name}>',
                                  path, element)
        if element.name not in TEXT_ELEMENTS and element.text.strip():
            raise self._error(f"no text allowed inside <{element.name}>", path, element)

    def _text(self, element: Element, path: str) -> str:
        value = element.text.strip()
        if not value:
            raise self._error(f"<{element.name}> must not be empty", path, element)
        return value

    def _no_children(self, element: Element, path: str) -> None:
        if element.children:
            child = element.children[0]
            raise self._error(f"element <{child.name}> is not allowed inside "
                              f"<{element.name}>", path, child)

    @staticmethod
    def _resolve(path: str, including_file: str) -> str:
        # Relative paths are relative to the directory of the file naming them.
        return os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(including_file)), path))

    def _yes_no(self, element: Element, name: str, path: str) -> bool:
        value = element.attributes.get(name, "no")
        if value not in ("yes", "no"):
            raise self._error(f'{name}="{value}" must be "yes" or "no"', path, element)
        return value == "yes"

    # -- elements -----------------------------------------------------------

    def _busconfig_child(self, element: Element, path: str) -> None:
        handler: Callable[[Element, str], None] | None = getattr(
            self, "_element_" + element.name, None)
        if handler is None:
            if element.name in POLICY_CHILDREN or element.name in SELINUX_CHILDREN:
                raise self._error(f"element <{element.name}> is not allowed inside "
                                  "<busconfig>", path, element)
            raise self._error(f"unknown element <{element.name}>", path, element)
        self._check_shape(element, path)
        if element.name not in ("policy", "selinux"):
            self._no_children(element, path)
        handler(element, path)

    def _element_type(self, element: Element, path: str) -> None:
        self.config.bus_type = self._text(element, path)

    def _element_user(self, element: Element, path: str) -> None:
        self.config.user = self._text(element, path)

    def _element_fork(self, element: Element, path: str) -> None:
        self.config.fork = True

    def _element_keep_umask(self, element: Element, path: str) -> None:
        self.config.keep_umask = True

    def _element_syslog(self, element: Element, path: str) -> None:
        self.config.syslog = True

    def _element_allow_anonymous(self, element: Element, path: str) -> None:
        self.config.allow_anonymous = True

    def _element_listen(self, element: Element, path: str) -> None:
        self.config.listen.append(self._text(element, path))

    def _element_pidfile(self, element: Element, path: str) -> None:
        self.config.pidfile = self._text(element, path)

    def _element_auth(self, element: Element, path: str) -> None:
        mechanism = self._text(element, path)
        if mechanism not in self.config.auth:
            self.config.auth.append(mechanism)

    def _element_servicehelper(self, element: Element, path: str) -> None:
        self.config.servicehelper = self._text(element, path)

    def _element_servicedir(self, element: Element, path: str) -> None:
        directory = self._resolve(self._text(element, path), path)
        self.config.add_servicedir(ServiceDir(directory))

    def _element_standard_session_servicedirs(self, element: Element, path: str) -> None:
        for directory in standard_session_servicedirs(self.environ):
            self.config.add_servicedir(directory)

    def _element_standard_system_servicedirs(self, element: Element, path: str) -> None:
        for directory in standard_system_servicedirs():
            self.config.add_servicedir(directory)

    def _element_limit(self, element: Element, path: str) -> None:
        name = element.attributes.get("name")
        if name is None:
            raise self._error('<limit> must have a "name" attribute', path, element)
        raw = self._text(element, path)
        try:
            value = int(raw, 10)
        except ValueError:
            raise self._error(f'<limit name="{name}"> value "{raw}" is not an integer',
                              path, element) from None
        if name not in LIMIT_NAMES:
            # dbus-daemon also just warns, so newer configs keep working.
            log.warning("%s:%d: unknown limit %r ignored", path, element.line, name)
            return
        self.config.limit_overrides[name] = value

    def _element_include(self, element: Element, path: str) -> None:
        ignore_missing = self._yes_no(element, "ignore_missing", path)
        if_selinux_enabled = self._yes_no(element, "if_selinux_enabled", path)
        selinux_root_relative = self._yes_no(element, "selinux_root_relative", path)
        target = self._text(element, path)
        if if_selinux_enabled or selinux_root_relative:
            # sandbus has no SELinux support, so SELinux is "not enabled" and
            # there is no SELinux policy root to be relative to.
            log.info("%s:%d: include of %r skipped: SELinux is not supported",
                     path, element.line, target)
            return
        target = self._resolve(target, path)
        if not os.path.exists(target):
            if ignore_missing:
                log.debug("%s:%d: optional include %r is missing", path, element.line, target)
                return
            raise self._error(f'included file "{target}" does not exist', path, element)
        self._include(target, path, element)

    def _include(self, target: str, path: str, element: Element) -> None:
        if os.path.realpath(target) in self.include_stack:
            raise self._error(f'circular inclusion of "{target}"', path, element)
        self.read_file(target)

    def _element_includedir(self, element: Element, path: str) -> None:
        directory = self._resolve(self._text(element, path), path)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            # dbus-daemon tolerates missing include directories: the stock
            # configs name /etc/dbus-1/*.d, which usually do not exist.
            log.debug("%s:%d: include directory %r does not exist", path, element.line, directory)
            return
        except OSError as exc:
            raise self._error(f'cannot read include directory "{directory}": {exc.strerror}',
                              path, element) from None
        for name in names:
            candidate = os.path.join(directory, name)
            if name.endswith(".conf") and os.path.isfile(candidate):
                self._include(candidate, path, element)

    def _element_policy(self, element: Element, path: str) -> None:
        selectors = [name for name in ("context", "user", "group", "at_console")
                     if name in element.attributes]
        if len(selectors) != 1:
            raise self._error("<policy> must have exactly one of the attributes "
                              "context, user, group, at_console", path, element)
        kind = selectors[0]
        value = element.attributes[kind]
        if kind == "context":
            if value not in ("default", "mandatory"):
                raise self._error(f'context="{value}" must be "default" or "mandatory"',
                                  path, element)
            block = PolicyBlock(value, None, SourceLocation(path, element.line))
        else:
            if kind == "at_console" and value not in ("true", "false"):
                raise self._error(f'at_console="{value}" must be "true" or "false"',
                                  path, element)
            block = PolicyBlock(kind, value, SourceLocation(path, element.line))

        for child in element.children:
            if child.name not in POLICY_CHILDREN:
                raise self._error(f"element <{child.name}> is not allowed inside <policy>",
                                  path, child)
            self._check_shape(child, path, allowed_attributes=frozenset(child.attributes))
            self._no_children(child, path)
            try:
                rule = build_rule(child.name, child.attributes,
                                  SourceLocation(path, child.line))
            except RuleError as exc:
                raise self._error(str(exc), path, child) from None
            if rule.kind in ("user", "group") and block.context not in ("default", "mandatory"):
                raise self._error(f"<{child.name} {rule.kind}=...> cannot be in a per-"
                                  f"{block.context} policy: connection rules are bus-global",
                                  path, child)
            block.rules.append(rule)
        self.config.policies.append(block)

    def _element_selinux(self, element: Element, path: str) -> None:
        for child in element.children:
            if child.name not in SELINUX_CHILDREN:
                raise self._error(f"element <{child.name}> is not allowed inside <selinux>",
                                  path, child)
            self._check_shape(child, path)
            self._no_children(child, path)
            for required in ("own", "context"):
                if required not in child.attributes:
                    raise self._error(f'<associate> must have a "{required}" attribute',
                                      path, child)
        log.info("%s:%d: <selinux> ignored: sandbus has no SELinux support",
                 path, element.line)

    def _element_apparmor(self, element: Element, path: str) -> None:
        mode = element.attributes.get("mode", "enabled")
        if mode not in ("enabled", "disabled", "required"):
            raise self._error(f'mode="{mode}" must be "enabled", "disabled" or "required"',
                              path, element)
        self.config.apparmor_mode = mode
        level = logging.WARNING if mode == "required" else logging.INFO
        log.log(level, "%s:%d: <apparmor mode=%r> ignored: sandbus has no AppArmor "
                "mediation", path, element.line, mode)


def load_config(path: str | os.PathLike, *, environ: dict[str, str] | None = None) -> BusConfig:
    """Read a configuration file and everything it includes.

    ``environ`` replaces os.environ for <standard_session_servicedirs/>.
    """
    config = BusConfig()
    _Reader(config, environ).read_file(os.fspath(path))
    return config


def load_config_text(text: str | bytes, path: str, *,
                     environ: dict[str, str] | None = None) -> BusConfig:
    """Read configuration from memory; ``path`` names it in errors and anchors
    relative includes."""
    config = BusConfig()
    _Reader(config, environ).read_document(text, path)
    return config


def load_standard(kind: str, *, config_dir: str = STANDARD_CONFIG_DIR,
                  environ: dict[str, str] | None = None) -> BusConfig:
    """The well-known ``session`` or ``system`` bus configuration.

    Reads ``{config_dir}/{kind}.conf`` if it exists, otherwise sandbus's
    built-in copy of the stock file, read as if it were at that path so its
    relative includes (``session.d``, ``system.d``) resolve the same way.
    """
    if kind not in ("session", "system"):
        raise ValueError(f"kind must be 'session' or 'system', not {kind!r}")
    path = os.path.join(config_dir, f"{kind}.conf")
    if os.path.exists(path):
        return load_config(path, environ=environ)
    log.info("%s not found, using the built-in %s configuration", path, kind)
    return load_config_text(builtin.STOCK_CONFIGS[kind], path, environ=environ)
