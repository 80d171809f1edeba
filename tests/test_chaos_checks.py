"""The chaos check's run invariants (benchmarks/chaos_run_checks.py) fed made-up rows, calls and counts: each one
stays quiet on runs that kept their promises and fires on the fault it exists for, in its own category of the
summary. (The scenario itself is `python benchmarks/chaos.py`: minutes, processes, a random seed; these are the
checks it ends with, so a deleted or broken rule shows here.)"""

from __future__ import annotations

import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

from chaos_faults import is_final, tally_violations
from chaos_run_checks import (
    RunRow,
    RunWorld,
    StopCall,
    StopOperation,
    double_stops,
    early_auto_stops,
    missed_stops,
    run_grace,
    run_violations,
    stop_calls,
    stuck_runs,
)

T0 = datetime(2026, 12, 7, 12, 0, 0, tzinfo=UTC)  # when the runs' instances reached RUNNING
EXTEND = 10.0
GRACE = run_grace(15.0, 0.5)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(n: int, *, seconds: float = 20.0, extensions: int = 0, state: str = "stopped", **more: object) -> RunRow:
    """Run n: request n, instance run-n, RUNNING at T0 for `seconds` plus its extensions, stopped by stop 100 + n."""
    fields: dict[str, object] = {
        "run_id": n,
        "request_id": n,
        "instance_id": f"run-{n}",
        "state": state,
        "run_seconds": seconds,
        "extensions": extensions,
        "started_at": T0,
        "stop_at": at(seconds + extensions * EXTEND),
        "ended_reason": "auto",
        "stop_request_id": 100 + n,
        **more,
    }
    return RunRow(**fields)  # type: ignore[arg-type]


def stop(n: int, *, by: str = "system", state: str = "done", parent: int | None = None) -> StopOperation:
    """Stop 100 + n of run n's instance, under run n's start."""
    return StopOperation(100 + n, parent if parent is not None else n, state, by, (f"run-{n}",))


def call(n: int, seconds: float, status: int = 200, code: str | None = None) -> StopCall:
    """A StopInstances of run n's instance, `seconds` after T0 by the host's clock."""
    return StopCall((f"run-{n}",), status, code, at(seconds).timestamp())


def world(runs: list[RunRow], stops: list[StopOperation], calls: list[StopCall], **more: object) -> RunWorld:
    fields: dict[str, object] = {
        "runs": runs,
        "stops": stops,
        "calls": calls,
        "statuses": {r.instance_id: "STOPPED" for r in runs},
        "now": at(600),
        "extend_seconds": EXTEND,
        "grace": GRACE,
        **more,
    }
    return RunWorld(**fields)  # type: ignore[arg-type]


def kept() -> RunWorld:
    """Three runs that kept every promise: one auto-stopped on time, one extended once and auto-stopped after the
    new deadline, one stopped early by its requester; the extension audited and told."""
    return world(
        [run(1), run(2, extensions=1), run(3, ended_reason="early")],
        [stop(1), stop(2), stop(3, by="U0CHAOS1")],
        [call(1, 20.4), call(2, 30.2), call(3, 8.0)],
        extended=Counter({2: 1}),
        told_extended=Counter({2: 1}),
    )


def test_runs_that_kept_their_promises_break_nothing() -> None:
    assert run_violations(kept()) == []


def test_a_second_stopinstances_for_one_run_is_a_double_stop_but_a_call_that_did_nothing_is_not() -> None:
    twice = kept()
    twice.calls += [call(1, 21.0), call(3, 9.0, status=400, code="OPERATION_DENIED_INSTANCE_NOT_RUNNING")]
    found = double_stops(twice)
    assert len(found) == 2 and "run 1 (run-1): StopInstances for one run 2 times" in found[0], found

    retried = kept()
    retried.calls = [call(1, 20.2, status=500, code="INTERNAL_ERROR"), *retried.calls]  # not applied: called again
    assert double_stops(retried) == []


def test_two_stop_operations_under_one_run_are_a_double_stop_unless_the_first_failed() -> None:
    twice = kept()
    twice.stops.append(StopOperation(200, 1, "done", "system", ("run-1",)))
    assert double_stops(twice) == ["run 1 (run-1): 2 child stop operations [101, 200]"]

    again = kept()  # the first auto-stop failed at Zenlayer; the timer made it again later
    again.stops.insert(0, StopOperation(90, 1, "failed", "system", ("run-1",)))
    assert double_stops(again) == []


def test_a_run_left_running_past_its_deadline_and_the_grace_is_a_missed_stop() -> None:
    left = kept()
    left.runs[0] = run(1, state="running", ended_reason=None, stop_request_id=None)
    left.calls = left.calls[1:]
    left.statuses["run-1"] = "RUNNING"
    assert missed_stops(left) == ["run 1 (run-1): 580 s past its deadline, still RUNNING (running)"]

    within = world(left.runs, left.stops, left.calls, statuses=left.statuses, now=at(20 + GRACE - 1))
    assert missed_stops(within) == []  # may still be stopped in time


def test_a_stop_that_failed_leaving_the_instance_running_is_a_missed_stop() -> None:
    failed = kept()
    failed.runs[0] = run(1, state="ended", ended_reason="stop failed")
    failed.calls = [call(1, 20.3, status=500, code="INTERNAL_ERROR"), *failed.calls[1:]]
    failed.statuses["run-1"] = "RUNNING"
    assert missed_stops(failed) == ["run 1 (run-1): 580 s past its deadline, still RUNNING (ended, stop failed)"]


def test_a_stop_first_made_later_than_the_grace_is_a_missed_stop() -> None:
    late = kept()
    late.calls[0] = call(1, 20 + GRACE + 5)
    assert missed_stops(late) == ["run 1 (run-1): first StopInstances 50 s past its deadline"]


def test_a_stop_made_on_time_that_zenlayer_failed_and_accepted_later_is_not_missed() -> None:
    retried = kept()  # two calls answered 500 at the deadline; the auto-stop made again a minute later
    retried.runs[0] = run(1, stop_at=at(20 + 60 + 5))  # its row's stop_at moved to the retry
    fails = [call(1, 20.3, status=500, code="INTERNAL_ERROR"), call(1, 22.0, status=500, code="INTERNAL_ERROR")]
    retried.calls = [*fails, call(1, 85.4), *retried.calls[1:]]
    assert missed_stops(retried) == [] and double_stops(retried) == []


def test_an_auto_stop_before_the_deadline_an_extend_moved_is_a_stop_after_an_extension() -> None:
    # The run's row says it was extended (stop at T0+30 s), but its timer stopped it at the old deadline.
    ignored = kept()
    ignored.calls[1] = call(2, 20.5)
    assert early_auto_stops(ignored) == ["run 2: auto-stopped 9.5 s before the deadline 1 Extend set"]

    # The row never moved, but the extension was audited and its clicker was told "Extended".
    unmoved = kept()
    unmoved.runs[1] = run(2, extensions=0)
    unmoved.calls[1] = call(2, 20.5)
    assert early_auto_stops(unmoved) == ["run 2: auto-stopped 9.5 s before the deadline 1 Extend set"]


def test_an_auto_stop_before_its_deadline_is_early_and_a_requesters_stop_now_is_not() -> None:
    early = kept()
    early.calls[0] = call(1, 12.0)
    assert early_auto_stops(early) == ["run 1: auto-stopped 8.0 s before its deadline"]

    assert early_auto_stops(kept()) == []  # run 3 was stopped at 8 s, by its requester: no timer's doing


def test_runs_left_waiting_or_stopping_by_operations_that_ended_are_stuck() -> None:
    stuck = kept()
    stuck.runs += [
        run(4, state="waiting", started_at=None, stop_at=None, ended_reason=None, stop_request_id=None),
        run(5, state="stopping", ended_reason=None),
        run(6, state="stopping", ended_reason=None, stop_request_id=None),
    ]
    stuck.stops.append(stop(5, state="failed"))
    assert stuck_runs(stuck) == [
        "run 4 (run-4): left waiting after its start ended",
        "run 5 (run-5): left stopping, its stop 105 is failed",
        "run 6 (run-6): left stopping, no stop operation",
    ]
    stuck.active = frozenset({4, 105})  # their operations still run (the settle gave up): not stuck, not yet
    assert stuck_runs(stuck) == ["run 6 (run-6): left stopping, no stop operation"]


def test_an_extend_told_done_but_never_recorded_is_a_lost_outcome_and_the_stop_it_should_have_held_off_too() -> None:
    told = kept()
    told.told_extended[1] += 1
    found = run_violations(told)
    assert found == [
        "run 1: auto-stopped 9.6 s before the deadline 1 Extend set",
        "run 1: Extend click acknowledged but not taken (1 told, 0 audited)",
    ]
    assert tally_violations(found)["lost outcomes"] == 1


def test_each_broken_run_promise_is_counted_in_its_own_category() -> None:
    broken = kept()
    broken.calls[0] = call(1, 12.0)  # run 1: stopped early by its timer
    broken.calls[1] = call(2, 20.5)  # run 2: stopped despite its extension
    broken.calls.append(call(3, 9.0, status=400, code="OPERATION_DENIED_INSTANCE_NOT_RUNNING"))  # run 3: twice
    broken.runs.append(run(4, state="running", ended_reason=None, stop_request_id=None))  # run 4: never stopped
    broken.statuses["run-4"] = "RUNNING"
    broken.runs.append(run(5, state="stopping", ended_reason=None, stop_request_id=None))  # run 5: stuck
    broken.calls.append(call(5, 20.5))
    counts = tally_violations(run_violations(broken))
    assert {name: counts[name] for name in counts if counts[name]} == {
        "double stops": 1,
        "missed stops": 1,
        "stops after an extension": 1,
        "early auto-stops": 1,
        "stuck runs": 1,
    }


def test_the_simulators_stop_calls_are_read_with_their_times_and_answers() -> None:
    rows = [
        {"action": "StartInstances", "instanceIds": ["run-1"], "httpStatus": 200, "code": None, "time": 1.0},
        {"action": "StopInstances", "instanceIds": ["run-1"], "httpStatus": 200, "code": None, "time": 2.5},
        {"action": "StopInstances", "instanceIds": ["run-1"], "httpStatus": 400, "code": "X", "time": 3.0},
    ]
    calls = stop_calls(rows)
    assert calls == [StopCall(("run-1",), 200, None, 2.5), StopCall(("run-1",), 400, "X", 3.0)]
    assert [c.accepted for c in calls] == [True, False]


def test_a_starts_final_reply_is_its_own_outcome_not_a_report_of_its_runs_stop() -> None:
    assert is_final("<@U1> :white_check_mark: All 2 instances RUNNING in 40 s.")
    assert is_final("<@U1> :x: Not every instance started:\n• `web-1` — went STOPPED")
    assert is_final("<@U1> :alarm_clock: Stopped watching after 10 min; not RUNNING yet:\n• `web-1` — BOOTING")
    # A Stop now that Zenlayer failed reports in the start's thread too (the long chaos run, seed 54, took it for the
    # start's own final reply and counted a wrong message).
    assert not is_final("<@U1> :x: Not every instance stopped:\n• `run-002` — StopInstances answered 500")
    assert not is_final("<@U1> :alarm_clock: Stopped watching after 10 min; not STOPPED yet:\n• `web-1` — STOPPING")
