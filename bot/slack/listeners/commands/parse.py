"""Parse the text after `/vm` into a command, normalising what phones and Slack do to typed ids."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from bot.domain.actions import ACTIONS, START
from bot.domain.durations import parse_duration
from bot.domain.errors import InvalidInput
from bot.domain.ids import is_instance_id

MAX_TEXT_LENGTH = 4000
MAX_IDS = 200
MAX_PAGE = 1000  # more pages than any answer has (a page number beyond the last is answered as such)
PAGE_OPTION = "--page"
REQUEST_OPTION = "--request"
FOR_OPTION = "--for"
ALL_OPTION = "--all"

# Every action's verb (start, …) and the verbs that act on nothing.
ACTION_VERBS = tuple(action.words.verb for action in ACTIONS.values())
VERBS = (*ACTION_VERBS, "status", "list", "runs", "help", "grants", "grant", "revoke")

# Phones and macOS turn "--" into dashes and quotes into curly ones.
_TRANSLATE = str.maketrans(
    {
        "\u2010": "-",
        "\u2011": "-",
        "\u2012": "-",
        "\u2013": "-",
        "\u2014": "-",
        "\u2015": "-",
        "\u2212": "-",
        "\u2018": "'",
        "\u2019": "'",
        "\u201c": '"',
        "\u201d": '"',
        "\u00a0": " ",
        "\uff0c": ",",
    }
)
# With escaping on, Slack sends links as <http://web-1.example|web-1.example> or <http://web-1>.
_SLACK_LINK_RE = re.compile(r"<(?:https?|mailto):(?://)?([^|>]*)(?:\|([^>]*))?>")
_SEPARATORS_RE = re.compile(r"[\s,;'\"]+")
# Slack escapes what users type as &amp; &lt; &gt; (and only these); one pass, so "&amp;lt;" stays "&lt;".
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">"}
_ENTITY_RE = re.compile("|".join(_ENTITIES))


@dataclass(frozen=True)
class Command:
    """A parsed `/vm` command: its verb, the valid ids in order without duplicates, and what was invalid."""

    verb: str
    ids: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)  # raw words after the verb, for grant/revoke
    too_long: bool = False
    page: int = 1  # `--page N` of a long `/vm status` or `/vm list` answer
    request_id: int | None = None  # `/vm status --request N`: the instances of start request N
    option_problem: str | None = None  # a bad `--page`, `--request` or `--for`, said as the user should read it
    run_seconds: float | None = None  # `/vm start … --for 4h`: a time-boxed run
    everyone: bool = False  # `/vm runs --all`


def normalise(text: str) -> str:
    """Undo smart punctuation, Slack's link markup and its HTML entities so ids read as the user meant them."""
    text = text.translate(_TRANSLATE)
    text = _SLACK_LINK_RE.sub(lambda m: m.group(2) or m.group(1), text)
    return decode_entities(text)


def decode_entities(text: str) -> str:
    """Turn the three entities Slack sends for typed `&`, `<` and `>` back into the characters, once."""
    return _ENTITY_RE.sub(lambda m: _ENTITIES[m.group(0)], text)


def split_words(text: str) -> list[str]:
    """Split on whitespace, commas, semicolons and quotes, dropping empties."""
    return [w for w in _SEPARATORS_RE.split(text) if w]


def parse(text: str) -> Command:
    """Parse `/vm` text; an empty or unknown verb becomes `help`, ids are validated and de-duplicated."""
    if len(text) > MAX_TEXT_LENGTH:
        return Command(verb="help", too_long=True)
    words = split_words(normalise(text).strip())
    if not words:
        return Command(verb="help")
    verb = words[0].lower()
    rest = words[1:]
    if verb not in VERBS:
        return Command(verb="help", args=words)
    page, request_id, problem = 1, None, None
    if verb in ("status", "list"):
        rest, page, problem = _page(rest)
    if verb == "status":
        rest, request_word = _take_option(rest, REQUEST_OPTION)
        if request_word is not None:
            request_id = _positive(request_word)
            if request_id is None:
                problem = f"`{REQUEST_OPTION}` takes a request number, like `{REQUEST_OPTION} 42`."
    if verb == "runs":
        everyone = any(_is_option(word, ALL_OPTION) for word in rest)
        return Command(verb=verb, args=[w for w in rest if not _is_option(w, ALL_OPTION)], everyone=everyone)
    if verb not in (*ACTION_VERBS, "status"):
        return Command(verb=verb, args=rest, page=page, option_problem=problem)
    run_seconds = None
    if verb in ACTION_VERBS:
        rest, for_word = _take_option(rest, FOR_OPTION)
        run_seconds, problem = _run_length(verb, for_word, problem)
    ids: list[str] = []
    invalid: list[str] = []
    for word in rest:
        if not is_instance_id(word):
            if word not in invalid:
                invalid.append(word)
        elif word not in ids:
            ids.append(word)
    return Command(
        verb=verb,
        ids=ids,
        invalid=invalid,
        args=rest,
        too_long=len(ids) > MAX_IDS,
        page=page,
        request_id=request_id,
        option_problem=problem,
        run_seconds=run_seconds,
    )


def _page(words: list[str]) -> tuple[list[str], int, str | None]:
    """Take `--page N` from words; return the rest, the page (1 when absent or bad) and the problem to tell."""
    rest, word = _take_option(words, PAGE_OPTION)
    if word is None:
        return rest, 1, None
    page = _positive(word, MAX_PAGE)
    if page is None:
        return rest, 1, f"`{PAGE_OPTION}` takes a page number from 1 to {MAX_PAGE}, like `{PAGE_OPTION} 2`."
    return rest, page, None


def _run_length(verb: str, word: str | None, problem: str | None) -> tuple[float | None, str | None]:
    """Read `--for DURATION` (only a start takes one); return its seconds and the problem to tell, if any."""
    if word is None:
        return None, problem
    if verb != START.words.verb:
        return None, f"`{FOR_OPTION}` time-boxes a start: `/vm start ID --for 4h`."
    try:
        return parse_duration(word, what=f"`{FOR_OPTION}`"), problem
    except InvalidInput as exc:
        return None, f"{exc}."


def _take_option(words: list[str], name: str) -> tuple[list[str], str | None]:
    """Remove `name VALUE` or `name=VALUE` (the last one given) from words; return the rest and the value, which
    is "" when the option has none."""
    bare = name.lstrip("-")
    rest: list[str] = []
    value: str | None = None
    index = 0
    while index < len(words):
        word = words[index]
        # A phone turns "--" into a dash, which normalise() makes "-": accept one dash too.
        option, equals, given = word.partition("=")
        if not option.startswith("-") or option.lstrip("-").lower() != bare:
            rest.append(word)
        elif equals:
            value = given
        else:
            value = words[index + 1] if index + 1 < len(words) else ""
            index += 1
        index += 1
    return rest, value


def _is_option(word: str, name: str) -> bool:
    """True when word is the flag `name` (one dash will do: phones turn "--" into a dash)."""
    return word.startswith("-") and word.lstrip("-").lower() == name.lstrip("-")


def _positive(word: str, limit: int = 2**31 - 1) -> int | None:
    """Return word as a whole number from 1 to limit, or None."""
    return int(word) if word.isascii() and word.isdigit() and 1 <= int(word) <= limit else None
