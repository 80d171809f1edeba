"""The surfaces end to end with the bot's database on PostgreSQL (the other surface tests use SQLite files): an
approval from the App Home, a submission of the start modal, a forged one, and a Workflow Builder step completed
once RUNNING — over HTTP and Socket Mode. Skipped without a PostgreSQL server (VM_BOT_TEST_POSTGRES_URL)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_app_home, test_start_modal, test_workflow_step
from tests.db_support import POSTGRES_ENV, POSTGRES_URL, empty_database_url

pytestmark = pytest.mark.skipif(not POSTGRES_URL, reason=f"set {POSTGRES_ENV} to run against PostgreSQL")


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    """A fresh schema on the PostgreSQL server (the bot migrates it when it starts)."""
    with empty_database_url("postgres", tmp_path) as url:
        yield url


# The same tests as in their modules, collected here again with the database above.
test_home_approval_on_postgres = test_app_home.test_an_approver_approves_from_the_home_and_the_request_leaves_it
test_modal_on_postgres = (
    test_start_modal.test_vm_start_alone_opens_the_modal_and_a_submission_asks_for_the_usual_confirmation
)
test_forged_submission_on_postgres = (
    test_start_modal.test_a_forged_submission_outside_the_grants_starts_nothing_and_is_audited
)
test_step_on_postgres = (
    test_workflow_step.test_the_step_completes_with_its_outputs_once_running_long_after_its_token_expired
)
