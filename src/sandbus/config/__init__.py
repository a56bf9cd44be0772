"""dbus-daemon XML configuration: parsing (``parser``) and policy (``policy``)."""

from .model import BusConfig, ConfigError, Limits, PolicyBlock, Rule, ServiceDir
from .parser import load_config, load_config_text, load_standard
from .policy import ConnectionPolicy, Creds, Decision, MessageFacts, Policy

__all__ = [
    "BusConfig", "ConfigError", "Limits", "PolicyBlock", "Rule", "ServiceDir",
    "load_config", "load_config_text", "load_standard",
    "ConnectionPolicy", "Creds", "Decision", "MessageFacts", "Policy",
]
