"""Read one XML file into a small element tree, safely.

Configuration files are read by a privileged daemon, so the reader refuses
everything XML can do beyond plain elements: external entities are never
fetched, the DTD named by the stock files' DOCTYPE is never loaded, and
entity declarations of any kind are rejected (that also stops
"billion laughs" expansion). Each element remembers its line so errors can
point at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.parsers import expat

from .model import ConfigError


@dataclass
class Element:
    name: str
    attributes: dict[str, str]
    line: int
    children: list["Element"] = field(default_factory=list)
    text: str = ""


def parse_xml(data: bytes | str, filename: str) -> Element:
    """Parse a whole document and return its root element."""
    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[Element] = []
    root: list[Element] = []

    def fail(message: str) -> None:
        element = stack[-1].name if stack else None
        raise ConfigError(message, file=filename, line=parser.CurrentLineNumber,
                          element=element)

    def start(name: str, attributes: dict[str, str]) -> None:
        element = Element(name, attributes, parser.CurrentLineNumber)
        if stack:
            stack[-1].children.append(element)
        else:
            root.append(element)
        stack.append(element)

    def end(name: str) -> None:
        stack.pop()

    def characters(data: str) -> None:
        if stack:
            stack[-1].text += data

    def refuse_entity_declaration(name, *args) -> None:
        fail(f"entity declarations are not allowed (entity {name!r})")

    def refuse_external_entity(context, base, system_id, public_id) -> int:
        fail(f"external entity {system_id!r} is not allowed")
        return 0  # not reached; returning 0 would also make expat stop

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = characters
    parser.EntityDeclHandler = refuse_entity_declaration
    parser.UnparsedEntityDeclHandler = refuse_entity_declaration
    parser.ExternalEntityRefHandler = refuse_external_entity
    # References to entities that expat could not see declared (because the
    # DTD is never read) are reported here instead of being expanded.
    parser.SkippedEntityHandler = lambda name, is_parameter: fail(
        f"reference to undeclared entity {name!r}")

    try:
        parser.Parse(data, True)
    except expat.ExpatError as exc:
        element = stack[-1].name if stack else None
        raise ConfigError(f"malformed XML: {expat.ErrorString(exc.code)}",
                          file=filename, line=exc.lineno, element=element) from None
    if not root:
        raise ConfigError("document has no root element", file=filename, line=1)
    return root[0]
