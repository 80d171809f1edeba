"""Acknowledgements first: work handed off after an ack waits while other acks are answered, but never for long."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text

from bot.db.session import Database
from bot.runtime.ack_first import AckFirst


def test_background_work_waits_until_acks_have_been_quiet_for_a_moment() -> None:
    gate = AckFirst(quiet_seconds=0.05, max_delay_seconds=30)
    turn = threading.Event()
    waiter = threading.Thread(target=lambda: (gate.wait_turn(), turn.set()))
    with gate.acknowledging():
        waiter.start()
        assert not turn.wait(0.3)  # held back for as long as an ack is being answered
    finished = time.monotonic()
    assert turn.wait(5)
    assert time.monotonic() - finished >= 0.04  # and then for the quiet period
    waiter.join()


def test_a_steady_stream_of_acks_cannot_starve_background_work() -> None:
    gate = AckFirst(quiet_seconds=60, max_delay_seconds=0.1)
    started = time.monotonic()
    with gate.acknowledging():
        gate.wait_turn()
    assert time.monotonic() - started < 5


def test_no_wait_when_nothing_is_being_acknowledged() -> None:
    gate = AckFirst(quiet_seconds=60, max_delay_seconds=60)
    started = time.monotonic()
    gate.wait_turn()
    assert time.monotonic() - started < 5


def test_writers_ask_for_their_turn_and_readers_do_not(tmp_path: Path) -> None:
    asked: list[str] = []
    db = Database(f"sqlite:///{tmp_path / 'x.db'}", before_write=lambda: asked.append("write"))
    try:
        with db.session(readonly=True) as session:
            session.execute(text("SELECT 1"))
        with db.reading() as connection:
            connection.execute(text("SELECT 1"))
        assert asked == []
        with db.session() as session:
            session.execute(text("SELECT 1"))
        assert asked == ["write"]
    finally:
        db.close()
