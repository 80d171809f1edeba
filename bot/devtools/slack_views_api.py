"""Trigger ids, modals and Home tabs as the Slack stand-in keeps them, and views.open/push/update/publish.

- a trigger_id is issued by the driver with the interaction that carries it, is good for one views.open or
  views.push (`exchanged_trigger_id` after that) within 3 s (`expired_trigger_id`), and an id Slack never issued
  is `invalid_trigger_id`;
- every view is validated (`bot.devtools.block_kit`): `invalid_arguments` with Slack-style messages, or
  `view_too_large`; views.update and views.publish check an optional `hash` (`hash_conflict`), views.update needs a
  view that is still open (`not_found`); a modal holds at most 3 views (`push_limit_reached`);
- the app's answer to a view submission (errors, update, push, clear, or a bare ack) changes the modal as in Slack.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.devtools.block_kit import view_error
from bot.devtools.slack_answers import Answer, decoded, invalid, missing, refusal
from bot.devtools.slack_views import SlackView, held_body

TRIGGER_TTL_SECONDS = 3.0
VIEW_STACK_LIMIT = 3


@dataclass
class _Trigger:
    user: str
    channel: str | None
    issued_at: float
    exchanged: bool = False


class ViewsApi:
    """Triggers, modals and Homes, and the Web API methods and submission answers that act on them."""

    def __init__(self, now: Callable[[], float], ids: itertools.count[int]):
        self._now = now
        self._ids = ids  # shared with function executions, as Slack's ids are unique across them
        self._triggers: dict[str, _Trigger] = {}
        self.views: dict[str, SlackView] = {}
        self._homes: dict[str, str] = {}  # user -> the id of their Home view
        self._stacks: dict[str, list[str]] = {}  # user -> ids of the views of their open modal, bottom first

    def issue_trigger(self, user: str, channel: str | None) -> str:
        """Issue a trigger_id for an interaction by `user` (in `channel`, if it had one), shaped like Slack's."""
        number = next(self._ids)
        trigger_id = f"{7_000_000_000_000 + number}.{1_000_000_000_001}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = _Trigger(user, channel, self._now())
        return trigger_id

    # --- inspection -------------------------------------------------------------------------------------

    def home(self, user: str) -> SlackView | None:
        """Return the Home view published for a user, if any."""
        view_id = self._homes.get(user)
        return self.views[view_id] if view_id else None

    def modals(self, user: str) -> list[SlackView]:
        """Return the views of a user's open modal, bottom first (the last one is on screen)."""
        return [self.views[v] for v in self._stacks.get(user, [])]

    # --- the Web API ------------------------------------------------------------------------------------

    def answer(self, method: str, args: dict[str, Any]) -> Answer:
        """Answer views.open, views.push, views.update or views.publish."""
        if method == "views.open":
            return self._open(args)
        if method == "views.push":
            return self._push(args)
        if method == "views.update":
            return self._update(args)
        return self._publish(args)

    def _open(self, args: dict[str, Any]) -> Answer:
        view = decoded(args.get("view"))
        # Slack's order of checks (view or trigger first) is not documented; a bad view leaves the trigger unused.
        refused = refusal(view_error(view, "modal")) or self._trigger_problem(args.get("trigger_id"))
        if refused:
            return refused
        trigger = self._exchange(str(args["trigger_id"]))
        for old in self.modals(trigger.user):  # a new modal replaces whatever modal the user had open
            old.closed = True
        opened = self._hold(view, trigger.user, opened_from=trigger.channel)
        self._stacks[trigger.user] = [opened.id]
        return {"ok": True, "view": opened.body}

    def _push(self, args: dict[str, Any]) -> Answer:
        view = decoded(args.get("view"))
        refused = refusal(view_error(view, "modal")) or self._trigger_problem(args.get("trigger_id"))
        if refused:
            return refused
        user = self._triggers[str(args["trigger_id"])].user
        stack = self.modals(user)
        if not stack:
            return {"ok": False, "error": "not_found"}
        if len(stack) >= VIEW_STACK_LIMIT:
            return {"ok": False, "error": "push_limit_reached"}
        self._exchange(str(args["trigger_id"]))
        return {"ok": True, "view": self.push(stack[-1], view).body}

    def _update(self, args: dict[str, Any]) -> Answer:
        view = decoded(args.get("view"))
        current = self.views.get(str(args.get("view_id") or ""))
        if current is None and args.get("external_id"):
            current = next((v for v in self.views.values() if v.body.get("external_id") == args["external_id"]), None)
        if current is None or current.closed:
            return {"ok": False, "error": "not_found"}
        refused = refusal(view_error(view, current.type))
        if refused:
            return refused
        if args.get("hash") and args["hash"] != current.hash:
            return {"ok": False, "error": "hash_conflict"}
        return {"ok": True, "view": self.replace(current, view).body}

    def _publish(self, args: dict[str, Any]) -> Answer:
        user = str(args.get("user_id") or "")
        if not user:
            return invalid(missing("user_id"))
        view = decoded(args.get("view"))
        refused = refusal(view_error(view, "home"))
        if refused:
            return refused
        current = self.home(user)
        if current is not None and args.get("hash") and args["hash"] != current.hash:
            return {"ok": False, "error": "hash_conflict"}
        if current is None:
            current = self._hold(view, user, opened_from=None)
            self._homes[user] = current.id
        else:
            self.replace(current, view)
        return {"ok": True, "view": current.body}

    # --- modals and their views -------------------------------------------------------------------------

    def submission_answered(self, view_id: str, answer: dict[str, Any]) -> Answer:
        """Apply an app's answer to the submission of a view as Slack does, and say whether Slack took it
        ({"ok": False, ...}: the user sees an error and the modal stays as it was)."""
        view = self.views.get(view_id)
        if view is None or view.closed:
            return {"ok": False, "error": "not_found"}
        action = answer.get("response_action")
        if not answer:  # a bare ack: the view that was submitted closes (and the modal, if it was the only one)
            self.close(view)
        elif action == "errors":
            problems = _errors_problems(view, answer.get("errors"))
            if problems:
                return invalid(*problems)
        elif action in ("update", "push"):
            refused = refusal(view_error(answer.get("view"), "modal"))
            if refused:
                return refused
            if action == "update":
                self.replace(view, answer["view"])
            elif len(self.modals(view.user)) >= VIEW_STACK_LIMIT:
                return {"ok": False, "error": "push_limit_reached"}
            else:
                self.push(view, answer["view"])
        elif action == "clear":
            self.close(view, everything=True)
        else:
            return invalid(f"[ERROR] unknown response_action {action!r} [json-pointer:/response_action]")
        return {"ok": True}

    def push(self, below: SlackView, view: dict[str, Any]) -> SlackView:
        """Put a new view on top of `below` in its modal (the caller checked the view and the stack limit)."""
        root = str(below.body.get("root_view_id") or below.id)
        pushed = self._hold(view, below.user, opened_from=below.opened_from, previous=below.id, root=root)
        self._stacks.setdefault(below.user, []).append(pushed.id)
        return pushed

    def replace(self, current: SlackView, view: dict[str, Any]) -> SlackView:
        """Replace a view's content in place: same id and place in its modal, a new hash."""
        kept = {k: current.body.get(k) for k in ("id", "root_view_id", "previous_view_id")}
        current.body = {**held_body(view, current.id, self._hash()), **kept}
        current.versions += 1
        return current

    def close(self, view: SlackView, *, everything: bool = False) -> None:
        """Close one view of a modal (the one on screen, as a submission does) or, with `everything`, the modal."""
        stack = self._stacks.get(view.user, [])
        closing = list(stack) if everything else [view.id]
        for view_id in closing:
            self.views[view_id].closed = True
        self._stacks[view.user] = [v for v in stack if v not in closing]

    def _hold(
        self, view: dict[str, Any], user: str, *, opened_from: str | None, previous: str | None = None, root: str = ""
    ) -> SlackView:
        view_id = f"V{next(self._ids):010d}"
        body = held_body(view, view_id, self._hash())
        body.update(previous_view_id=previous, root_view_id=root or view_id)
        held = SlackView(view_id, user, body, opened_from=opened_from)
        self.views[view_id] = held
        return held

    def _trigger_problem(self, trigger_id: Any) -> Answer | None:
        """Return Slack's refusal of a trigger_id (None when it can be exchanged now)."""
        if not trigger_id:
            return invalid(missing("trigger_id"))
        trigger = self._triggers.get(str(trigger_id))
        if trigger is None:
            return {"ok": False, "error": "invalid_trigger_id"}
        if trigger.exchanged:
            return {"ok": False, "error": "exchanged_trigger_id"}
        if self._now() - trigger.issued_at > TRIGGER_TTL_SECONDS:
            return {"ok": False, "error": "expired_trigger_id"}
        return None

    def _exchange(self, trigger_id: str) -> _Trigger:
        trigger = self._triggers[trigger_id]
        trigger.exchanged = True
        return trigger

    @staticmethod
    def _hash() -> str:
        return f"{1_700_000_000 + secrets.randbelow(10**8)}.{secrets.token_urlsafe(6)}"


def _errors_problems(view: SlackView, errors: Any) -> list[str]:
    """Check a `response_action: errors` answer: sentences keyed by the block_ids of the view's input blocks.

    Slack shows field errors only under input blocks; what it does with any other key was not confirmed (the
    modal then shows the user a generic error, as far as we know), so the stand-in refuses it."""
    if not isinstance(errors, dict) or not errors:
        return ["[ERROR] errors must name at least one input block [json-pointer:/errors]"]
    inputs = {b.get("block_id") for b in view.blocks if b.get("type") == "input"}
    problems = [
        f"[ERROR] no input block with block_id {key!r} in this view [json-pointer:/errors/{key}]"
        for key in errors
        if key not in inputs
    ]
    problems += [
        f"[ERROR] must be a sentence [json-pointer:/errors/{key}]"
        for key, text in errors.items()
        if not isinstance(text, str) or not text
    ]
    return problems
