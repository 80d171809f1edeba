"""Grants: the coverage rule (pure) and storing, revoking and listing grants (real SQLite)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.db.models import Grant
from bot.db.session import Database
from bot.domain.errors import InvalidInput
from bot.grants.rules import Coverage, add_grants, check_coverage, list_grants, revoke_grants
from tests.db_support import migrated_database

CHAN = "C0HERE"
OTHER = "C0OTHER"


def g(pattern: str, *, channel: str = "*", action: str = "start", approval: bool = False) -> Grant:
    return Grant(
        user_id="U0001", action=action, pattern=pattern, channel_id=channel, needs_approval=approval, granted_by="t"
    )


def cover(grants: list[Grant], ids: list[str], *, action: str = "start", channel: str = CHAN) -> Coverage:
    return check_coverage(grants, ids, action=action, channel_id=channel)


# --- the coverage rule -------------------------------------------------------------------------------------------


def test_no_grants_cover_nothing() -> None:
    result = cover([], ["web-1"])
    assert result == Coverage(allowed=[], uncovered=["web-1"], channels_elsewhere={}, needs_approval=[])
    assert not result.ok


def test_star_covers_every_well_formed_id() -> None:
    result = cover([g("*")], ["web-1", "db.2", "123456", "A_b-c"])
    assert result.ok
    assert result.allowed == ["web-1", "db.2", "123456", "A_b-c"]


def test_exact_id_covers_only_itself() -> None:
    result = cover([g("web-1")], ["web-1", "web-10", "web-"])
    assert result.allowed == ["web-1"]
    assert result.uncovered == ["web-10", "web-"]


def test_glob_patterns() -> None:
    grants = [g("web-*"), g("db-?"), g("cache-[ab]"), g("api-[!0-4]")]
    ids = ["web-1", "web-", "db-1", "db-12", "cache-a", "cache-c", "api-9", "api-3", "worker-1"]
    result = cover(grants, ids)
    assert result.allowed == ["web-1", "web-", "db-1", "cache-a", "api-9"]
    assert result.uncovered == ["db-12", "cache-c", "api-3", "worker-1"]


def test_patterns_are_case_sensitive() -> None:
    result = cover([g("web-*")], ["WEB-1", "web-1"])
    assert result.allowed == ["web-1"]
    assert result.uncovered == ["WEB-1"]


@pytest.mark.parametrize("bad_id", ["*", "web-*", "web-?", "web-[1]", "", "web 1", "<!channel>", "a" * 65, "-web"])
def test_ids_that_are_not_well_formed_are_never_covered(bad_id: str) -> None:
    result = cover([g("*"), g("web-*"), g(bad_id or "x")], [bad_id])
    assert result.uncovered == [bad_id]
    assert result.allowed == []
    assert result.channels_elsewhere == {}


def test_duplicates_are_reported_once_in_first_order() -> None:
    result = cover([g("*")], ["b", "a", "b"])
    assert result.allowed == ["b", "a"]


def test_channel_scoped_grant_covers_only_in_its_channel() -> None:
    grants = [g("web-*", channel=OTHER), g("web-*", channel="C0THIRD")]
    here = cover(grants, ["web-1", "db-1"])
    assert here.uncovered == ["web-1", "db-1"]
    assert here.channels_elsewhere == {"web-1": [OTHER, "C0THIRD"]}  # db-1 is covered nowhere
    there = cover(grants, ["web-1"], channel=OTHER)
    assert there.ok and there.allowed == ["web-1"]


def test_any_channel_grant_covers_everywhere() -> None:
    for channel in (CHAN, OTHER, "D0DIRECT", "G0PRIVATE"):
        assert cover([g("web-*")], ["web-1"], channel=channel).ok


def test_mixed_ids_some_covered_some_not() -> None:
    result = cover([g("web-*"), g("db-*", channel=OTHER)], ["web-1", "db-1", "zzz"])
    assert result.allowed == ["web-1"]
    assert result.uncovered == ["db-1", "zzz"]
    assert result.channels_elsewhere == {"db-1": [OTHER]}


def test_actions_are_separate() -> None:
    grants = [g("*", action="approve"), g("*", action="admin")]
    assert cover(grants, ["web-1"], action="start").uncovered == ["web-1"]
    assert cover([g("*")], ["web-1"], action="approve").uncovered == ["web-1"]
    assert cover(grants, ["web-1"], action="approve").ok
    # a grant for another action elsewhere is not offered as "covered from another channel"
    assert cover([g("*", channel=OTHER, action="approve")], ["web-1"]).channels_elsewhere == {}


def test_needs_approval_only_when_every_covering_grant_needs_it() -> None:
    grants = [
        g("web-*", approval=True),
        g("web-1", approval=False),
        g("db-*", approval=True),
        g("db-*", channel=CHAN, approval=True),
        g("cache-*", approval=True),
        g("cache-*", channel=OTHER, approval=False),  # does not apply here
        g("api-*", approval=False, action="approve"),  # another action does not count
        g("api-*", approval=True),
    ]
    result = cover(grants, ["web-1", "web-2", "db-1", "cache-1", "api-1"])
    assert result.ok
    assert result.needs_approval == ["web-2", "db-1", "cache-1", "api-1"]


def test_needs_approval_lists_only_allowed_ids() -> None:
    result = cover([g("web-*", approval=True)], ["web-1", "db-1"])
    assert result.needs_approval == ["web-1"]
    assert result.uncovered == ["db-1"]


# --- stored grants -----------------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path):
    with migrated_database("sqlite", tmp_path) as database:
        yield database


def _rows(db: Database, user: str | None = None) -> list[tuple[str, str, str, str, bool]]:
    with db.session(readonly=True) as s:
        return [(x.user_id, x.action, x.pattern, x.channel_id, x.needs_approval) for x in list_grants(s, user)]


def test_add_grants_without_channels_is_any_channel(db: Database) -> None:
    with db.session() as s:
        assert add_grants(s, "U0001", ["web-*", "db-1"], granted_by="test") == 2
    assert _rows(db) == [("U0001", "start", "db-1", "*", False), ("U0001", "start", "web-*", "*", False)]


def test_add_grants_every_pattern_in_every_channel(db: Database) -> None:
    with db.session() as s:
        n = add_grants(s, "U0001", ["a-*", "b-*", "a-*"], channels=["C0001", "C0002"], action="approve", granted_by="t")
    assert n == 4
    assert {(r[2], r[3]) for r in _rows(db)} == {("a-*", "C0001"), ("a-*", "C0002"), ("b-*", "C0001"), ("b-*", "C0002")}
    assert {r[1] for r in _rows(db)} == {"approve"}


def test_granting_twice_updates_needs_approval_instead_of_duplicating(db: Database) -> None:
    with db.session() as s:
        assert add_grants(s, "U0001", ["web-*"], needs_approval=True, granted_by="t") == 1
    with db.session() as s:
        assert add_grants(s, "U0001", ["web-*"], needs_approval=False, granted_by="t") == 0
    assert _rows(db) == [("U0001", "start", "web-*", "*", False)]
    with db.session() as s:
        assert add_grants(s, "U0001", ["web-*", "db-*"], needs_approval=True, granted_by="t") == 1
    assert _rows(db) == [("U0001", "start", "db-*", "*", True), ("U0001", "start", "web-*", "*", True)]


@pytest.mark.parametrize(
    ("user", "patterns", "channels", "action", "named"),
    [
        ("bob", ["web-*"], [], "start", ["`bob`"]),
        ("U0001", [""], [], "start", ["an empty value"]),
        ("U0001", ["web-*", "bad pattern", "<@U1>"], [], "start", ["`bad pattern`", "`<@U1>`"]),
        ("U0001", ["web-*"], ["general", "C0001"], "start", ["`general`"]),
        ("U0001", ["web-*"], [], "destroy", ["`destroy`"]),
        ("x", [""], ["#ops"], "nope", ["`x`", "an empty value", "`#ops`", "`nope`"]),
        ("U0001", [], [], "start", ["at least one instance pattern"]),
    ],
)
def test_add_grants_refuses_bad_input_naming_every_bad_value(
    db: Database, user: str, patterns: list[str], channels: list[str], action: str, named: list[str]
) -> None:
    with pytest.raises(InvalidInput) as caught, db.session() as s:
        add_grants(s, user, patterns, channels=channels, action=action, granted_by="t")
    for fragment in named:
        assert fragment in str(caught.value)
    assert _rows(db) == []


def test_a_lone_string_is_one_pattern_not_characters(db: Database) -> None:
    with db.session() as s:
        assert add_grants(s, "U0001", "web-*", granted_by="t") == 1
    assert [r[2] for r in _rows(db)] == ["web-*"]


def test_revoke_by_selectors_and_all(db: Database) -> None:
    with db.session() as s:
        add_grants(s, "U0001", ["a", "b", "c"], granted_by="t")
        add_grants(s, "U0001", ["a"], channels=["C0001"], granted_by="t")
        add_grants(s, "U0001", ["a"], action="approve", granted_by="t")
        add_grants(s, "U0002", ["a"], granted_by="t")
    with db.session() as s:
        assert revoke_grants(s, "U0001", patterns=["a"], channels=["*"], action="start") == 1
    with db.session() as s:
        assert revoke_grants(s, "U0001", channels=["C0001"]) == 1
    with db.session() as s:
        assert revoke_grants(s, "U0001", action="approve") == 1
    with db.session() as s:
        assert revoke_grants(s, "U0001", patterns=["zzz"]) == 0
    assert [r[2] for r in _rows(db, "U0001")] == ["b", "c"]
    with db.session() as s:
        assert revoke_grants(s, "U0001") == 2
    assert _rows(db) == [("U0002", "start", "a", "*", False)]


def test_revoke_refuses_bad_input(db: Database) -> None:
    with pytest.raises(InvalidInput, match="not a Slack member id"), db.session() as s:
        revoke_grants(s, "nobody")
    with pytest.raises(InvalidInput, match="not a Slack channel id"), db.session() as s:
        revoke_grants(s, "U0001", channels=["general"])


def test_list_grants_is_ordered_and_filtered(db: Database) -> None:
    with db.session() as s:
        add_grants(s, "U0002", ["z"], granted_by="t")
        add_grants(s, "U0001", ["y", "x"], granted_by="t")
        add_grants(s, "U0001", ["x"], action="admin", granted_by="t")
    assert [(r[0], r[1], r[2]) for r in _rows(db)] == [
        ("U0001", "admin", "x"),
        ("U0001", "start", "x"),
        ("U0001", "start", "y"),
        ("U0002", "start", "z"),
    ]
    assert [r[2] for r in _rows(db, "U0002")] == ["z"]
    assert _rows(db, "U0404") == []


def test_stored_grants_feed_check_coverage(db: Database) -> None:
    with db.session() as s:
        add_grants(s, "U0001", ["web-*"], channels=[CHAN], needs_approval=True, granted_by="t")
    with db.session(readonly=True) as s:
        result = check_coverage(list_grants(s, "U0001"), ["web-1"], action="start", channel_id=CHAN)
    assert result.ok and result.needs_approval == ["web-1"]
