"""What a grant selects: instances by id glob, name glob, resource group (id or name) or tag `key=value`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

from bot.domain.ids import bracket_problem, is_instance_id, is_pattern
from bot.domain.ports import InstanceInfo

GLOB_CHARACTERS = frozenset("*?[]!")
MAX_VALUE_LENGTH = 255
# Resource group ids and names, and tag keys and values: printable, no whitespace at the ends, no glob or markup.
_EDGE = r"[^\s*?\[\]<>&`|\x00-\x1f\x7f]"
_EXACT_RE = re.compile(rf"^{_EDGE}([^*?\[\]<>&`|\x00-\x1f\x7f]*{_EDGE})?$")


class SelectorKind(StrEnum):
    """How a grant picks instances (the stored value of grants.kind)."""

    ID = "id"  # a glob over instance ids (what grants always were)
    NAME = "name"  # a glob over instance names
    GROUP = "group"  # a resource group, by id or by name, matched exactly
    TAG = "tag"  # a tag `key=value`, matched exactly


# The words people type for each kind, on the command line and in Slack.
OPTION_OF_KIND = {
    SelectorKind.ID: "--instances",
    SelectorKind.NAME: "--names",
    SelectorKind.GROUP: "--resource-group",
    SelectorKind.TAG: "--tag",
}
KIND_OF_OPTION = {option: kind for kind, option in OPTION_OF_KIND.items()}


@dataclass(frozen=True)
class Selector:
    """One kind and value, as stored on a grant."""

    kind: SelectorKind
    value: str

    def matches(self, instance_id: str, info: InstanceInfo | None) -> bool:
        """True when the instance (with its looked-up attributes, if any) is selected."""
        if not is_instance_id(instance_id):
            return False  # a malformed id could itself be a glob ("*"); it never counts as covered
        if self.kind == SelectorKind.ID:
            return fnmatchcase(instance_id, self.value)
        if info is None:
            return False  # attributes unknown: only an id grant can cover it
        if self.kind == SelectorKind.NAME:
            return fnmatchcase(info.name, self.value)
        if self.kind == SelectorKind.GROUP:
            return self.value in {info.resource_group_id, info.resource_group_name}
        key, _, value = self.value.partition("=")
        return (key, value) in info.tags

    @property
    def needs_attributes(self) -> bool:
        """True when matching needs the instance's looked-up attributes, not only its id."""
        return self.kind != SelectorKind.ID

    def describe(self) -> str:
        """Return the selector as people read it (plain text; callers escape for their medium)."""
        return {
            SelectorKind.ID: "{}",
            SelectorKind.NAME: "name {}",
            SelectorKind.GROUP: "resource group {}",
            SelectorKind.TAG: "tag {}",
        }[self.kind].format(f"`{self.value}`")


def of(kind: SelectorKind | str, value: str) -> Selector:
    """Build a selector from a kind name and a value."""
    return Selector(SelectorKind(kind), value)


def problem(selector: Selector) -> str | None:
    """Return why a selector is malformed, or None when it is usable."""
    value = selector.value
    shown = _quote(value)
    if selector.kind in (SelectorKind.ID, SelectorKind.NAME):
        what = "an instance" if selector.kind == SelectorKind.ID else "a name"
        why = bracket_problem(value)
        if is_pattern(value.replace("[", "").replace("]", "").replace("!", "")) and why is not None:
            target = "an instance id" if selector.kind == SelectorKind.ID else "an instance name"
            return f"{shown} {why}, so it could never match {target}"
        if not value or not is_pattern(value):
            return f"{shown} is not {what} pattern (letters, digits, . _ - and the globs * ? [ ] !)"
        return None
    if len(value) > MAX_VALUE_LENGTH:
        return f"{shown} is longer than {MAX_VALUE_LENGTH} characters"
    if selector.kind == SelectorKind.GROUP:
        if not _EXACT_RE.match(value):
            return f"{shown} is not a resource group id or name (matched exactly: no globs, <, >, &, ` or |)"
        return None
    key, equals, tag_value = value.partition("=")
    if not equals or not key:
        return f"{shown} is not a tag: write KEY=VALUE"
    if not _EXACT_RE.match(key) or "=" in key or (tag_value and not _EXACT_RE.match(tag_value)):
        return f"{shown} is not a tag KEY=VALUE (matched exactly: no globs, <, >, &, ` or |)"
    return None


def _has_glob(text: str) -> bool:
    """True when text contains a character fnmatch may treat as a wildcard."""
    return any(c in GLOB_CHARACTERS for c in text)


def pattern_within(pattern: str, admin_pattern: str) -> bool:
    """True when every value `pattern` can match is also matched by `admin_pattern` (decided conservatively).

    Matching one glob against another as text is unsound (`web-?` would "match" `web-*`), so only these count:
    the same pattern, an admin `*`, an exact value the admin's glob matches, and anything that starts with the
    literal prefix of an admin pattern of the form `PREFIX*`.
    """
    if pattern == admin_pattern or admin_pattern == "*":
        return True
    if not _has_glob(pattern):
        return fnmatchcase(pattern, admin_pattern)
    prefix = admin_pattern.removesuffix("*")
    return prefix != admin_pattern and not _has_glob(prefix) and pattern.startswith(prefix)


def within(selector: Selector, admin: Selector) -> bool:
    """True when an admin selector reaches every instance `selector` can select (conservatively).

    An id or name glob `*` covers every instance, so it reaches any selector; otherwise only the same kind counts:
    globs by pattern_within, resource groups and tags by exact match.
    """
    if admin.kind in (SelectorKind.ID, SelectorKind.NAME) and admin.value == "*":
        return True
    if selector.kind != admin.kind:
        return False
    if selector.kind in (SelectorKind.ID, SelectorKind.NAME):
        return pattern_within(selector.value, admin.value)
    return selector.value == admin.value


def _quote(value: str) -> str:
    """Quote a user-supplied value for a plain-text error message, shortened (the Slack layer escapes it)."""
    if len(value) > 60:
        value = value[:57] + "..."
    value = value.replace("`", "'")
    return f"`{value}`" if value else "an empty value"
