"""Grant selectors: what each matches, what is refused as malformed, an admin's reach, and their storage
(on SQLite and PostgreSQL, including grants that existed before selectors)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from bot.db import migrate
from bot.db.models import Grant
from bot.db.session import Database
from bot.devtools.zenlayer_simulator import parse_instance_specs
from bot.devtools.zenlayer_simulator.state import GENERATED_ID_PREFIX
from bot.domain.errors import InvalidInput
from bot.domain.ports import InstanceInfo
from bot.grants.admin import can_administer, parse_grant_args
from bot.grants.rules import add_grants, check_coverage, list_grants, revoke_grants
from bot.grants.selectors import Selector, SelectorKind, problem, within
from tests.db_support import BACKENDS, empty_database_url, migrated_database

ID, NAME, GROUP, TAG = SelectorKind.ID, SelectorKind.NAME, SelectorKind.GROUP, SelectorKind.TAG
WEB = InstanceInfo(
    "1234567890",
    "web-1",
    "STOPPED",
    "SEL-A",
    resource_group_id="rg-777",
    resource_group_name="dev team",
    tags=(("team", "web"), ("env", "")),
)


@pytest.mark.parametrize(
    ("selector", "info", "expected"),
    [
        (Selector(ID, "1234*"), None, True),
        (Selector(ID, "web-*"), WEB, False),  # an id glob looks at the id only
        (Selector(NAME, "web-*"), WEB, True),
        (Selector(NAME, "web-*"), None, False),  # attributes unknown: only id grants can cover
        (Selector(NAME, "db-*"), WEB, False),
        (Selector(GROUP, "rg-777"), WEB, True),
        (Selector(GROUP, "dev team"), WEB, True),
        (Selector(GROUP, "dev"), WEB, False),  # exact, not a prefix
        (Selector(TAG, "team=web"), WEB, True),
        (Selector(TAG, "env="), WEB, True),
        (Selector(TAG, "team=db"), WEB, False),
        (Selector(TAG, "team=web"), None, False),
    ],
)
def test_what_each_selector_matches(selector: Selector, info: InstanceInfo | None, expected: bool) -> None:
    assert selector.matches("1234567890", info) is expected


def test_a_malformed_id_is_never_covered_whatever_the_selector() -> None:
    assert not Selector(NAME, "*").matches("*", WEB)
    assert not Selector(ID, "*").matches("a b", None)


@pytest.mark.parametrize(
    ("selector", "fragment"),
    [
        (Selector(TAG, "team"), "write KEY=VALUE"),
        (Selector(TAG, "=web"), "write KEY=VALUE"),
        (Selector(TAG, "team=w*b"), "matched exactly"),
        (Selector(GROUP, "dev*"), "matched exactly"),
        (Selector(GROUP, "<!channel>"), "matched exactly"),
        (Selector(GROUP, " dev"), "matched exactly"),
        (Selector(GROUP, "x" * 256), "longer than"),
        (Selector(NAME, "web 1"), "not a name pattern"),
        (Selector(ID, ""), "not an instance pattern"),
    ],
)
def test_malformed_selectors_are_refused_with_the_reason(selector: Selector, fragment: str) -> None:
    reason = problem(selector)
    assert reason is not None and fragment in reason


def test_well_formed_selectors_pass() -> None:
    for selector in (Selector(TAG, "team=web"), Selector(TAG, "env="), Selector(GROUP, "Default Resource Group")):
        assert problem(selector) is None, selector


@pytest.mark.parametrize(
    ("selector", "admin", "reaches"),
    [
        (Selector(NAME, "web-1"), Selector(NAME, "web-*"), True),
        (Selector(NAME, "web-1?"), Selector(NAME, "web-*"), True),
        (Selector(NAME, "web-?"), Selector(NAME, "web-1"), False),
        (Selector(NAME, "db-*"), Selector(NAME, "web-*"), False),
        (Selector(GROUP, "dev"), Selector(GROUP, "dev"), True),
        (Selector(GROUP, "dev"), Selector(GROUP, "ops"), False),
        (Selector(TAG, "team=web"), Selector(TAG, "team=web"), True),
        (Selector(TAG, "team=web"), Selector(TAG, "team=db"), False),
        (Selector(TAG, "team=web"), Selector(GROUP, "dev"), False),  # another kind never reaches
        (Selector(NAME, "web-1"), Selector(ID, "web-*"), False),  # a name is not an id
        (Selector(TAG, "team=web"), Selector(ID, "*"), True),  # `*` covers every instance
        (Selector(GROUP, "dev"), Selector(NAME, "*"), True),
    ],
)
def test_an_admins_reach_follows_the_conservative_rules(selector: Selector, admin: Selector, reaches: bool) -> None:
    assert within(selector, admin) is reaches


def _grant(selector: Selector, *, action: str = "admin", channel: str = "*") -> Grant:
    return Grant(
        user_id="U0ADMIN",
        action=action,
        kind=selector.kind.value,
        pattern=selector.value,
        channel_id=channel,
        needs_approval=False,
        granted_by="t",
    )


def test_can_administer_takes_selectors_and_channels() -> None:
    admin = [_grant(Selector(GROUP, "dev"), channel="C0OPS")]

    assert can_administer(admin, "C0OPS", [Selector(GROUP, "dev")], ["C0OPS"])
    assert not can_administer(admin, "C0OPS", [Selector(GROUP, "dev")])  # "any channel" needs an unscoped admin
    assert not can_administer(admin, "C0OPS", [Selector(GROUP, "dev"), Selector(TAG, "team=web")], ["C0OPS"])
    assert not can_administer(admin, "C0OPS", [], ["C0OPS"])  # all of someone's grants: only an admin for `*`


def test_coverage_names_what_is_not_covered_and_where_it_would_be() -> None:
    grants = [_grant(Selector(TAG, "team=web"), action="start", channel="C0ELSEWHERE")]

    coverage = check_coverage(
        grants, [WEB.instance_id], action="start", channel_id="C0HERE", instances={"1234567890": WEB}
    )

    assert coverage.uncovered == [WEB.instance_id]
    assert coverage.channels_elsewhere == {WEB.instance_id: ["C0ELSEWHERE"]}
    assert coverage.names == {WEB.instance_id: "web-1"}


def test_chat_grant_words_parse_into_selectors() -> None:
    args = parse_grant_args(
        ["<@U0BOB>", "web-*", "--names", "api-*", "--resource-group", "dev", "-tag", "team=web", "--instances", "x"],
        revoking=False,
    )

    assert args.selectors == [
        Selector(ID, "web-*"),
        Selector(ID, "x"),
        Selector(NAME, "api-*"),
        Selector(GROUP, "dev"),
        Selector(TAG, "team=web"),
    ]
    with pytest.raises(InvalidInput, match="--tag needs a value"):
        parse_grant_args(["<@U0BOB>", "--tag"], revoking=False)


def test_simulator_instance_specs_keep_the_old_form_and_add_names_groups_and_tags() -> None:
    specs = parse_instance_specs(
        ["web-1", "db-1:running", "7001:STOPPED,name=api-1,group=dev,tag=team=api,tag=env=prod", "name=solo,zone=FRA-A"]
    )

    assert specs["web-1"] == "STOPPED" and specs["db-1"] == "RUNNING"
    assert specs["7001"] == {
        "status": "STOPPED",
        "name": "api-1",
        "group": "dev",
        "tags": [("team", "api"), ("env", "prod")],
    }
    generated = [k for k in specs if k.startswith(GENERATED_ID_PREFIX)]
    assert len(generated) == 1 and specs[generated[0]] == {
        "status": "STOPPED",
        "name": "solo",
        "zone": "FRA-A",
        "tags": [],
    }
    for bad in ("web-1,colour=red", "web-1,tag=team", ":STOPPED", "web-1:SLEEPING"):
        with pytest.raises(ValueError):
            parse_instance_specs([bad])


# --- storage, on every backend ---------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path):
    with migrated_database(request.param, tmp_path) as database:
        yield database


def test_one_value_under_different_kinds_is_different_grants(db: Database) -> None:
    with db.session() as s:
        added = add_grants(s, "U0001", ["web-1", Selector(NAME, "web-1"), Selector(GROUP, "web-1")], granted_by="t")
        again = add_grants(s, "U0001", [Selector(NAME, "web-1")], granted_by="t", needs_approval=True)

    assert (added, again) == (3, 0)
    with db.session(readonly=True) as s:
        rows = [(g.kind, g.pattern, g.needs_approval) for g in list_grants(s, "U0001")]
        only_names = [(g.kind, g.pattern) for g in list_grants(s, "U0001", selectors=[Selector(NAME, "web-1")])]
    assert rows == [("group", "web-1", False), ("id", "web-1", False), ("name", "web-1", True)]
    assert only_names == [("name", "web-1")]
    with db.session() as s:
        assert revoke_grants(s, "U0001", patterns=[Selector(GROUP, "web-1")]) == 1
        assert revoke_grants(s, "U0001", patterns=["web-1"]) == 1  # a plain string is an id glob
    with db.session(readonly=True) as s:
        assert [(g.kind, g.pattern) for g in list_grants(s, "U0001")] == [("name", "web-1")]


def test_add_grants_refuses_a_tag_without_equals(db: Database) -> None:
    with pytest.raises(InvalidInput, match="KEY=VALUE"), db.session() as s:
        add_grants(s, "U0001", [Selector(TAG, "team")], granted_by="t")


@pytest.mark.parametrize("backend", BACKENDS)
def test_grants_made_before_selectors_stay_id_globs(backend: str, tmp_path: Path) -> None:
    with empty_database_url(backend, tmp_path) as url:
        migrate.upgrade(url, "0001")
        database = Database(url)
        try:
            with database.session() as s:
                s.execute(
                    text(
                        "INSERT INTO grants (user_id, action, pattern, channel_id, needs_approval, granted_by, "
                        "created_at) VALUES ('U0OLD', 'start', 'web-*', '*', false, 'cli', CURRENT_TIMESTAMP)"
                    )
                )
            migrate.upgrade(url)
            with database.session(readonly=True) as s:
                old = list_grants(s, "U0OLD")
            assert [(g.kind, g.pattern) for g in old] == [("id", "web-*")]
            assert check_coverage(old, ["web-1"], action="start", channel_id="C0X").ok
        finally:
            database.close()
