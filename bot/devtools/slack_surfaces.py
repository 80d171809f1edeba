"""What the Slack stand-in keeps for the surfaces beyond messages: trigger ids, modals and App Home views, and
Workflow Builder function executions with their just-in-time tokens.

`FakeSlackWebApi` owns one `SlackSurfaces` and calls it with its lock held. It answers views.open, views.push,
views.update, views.publish, functions.completeSuccess and functions.completeError as Slack does:

- a trigger_id is issued by the driver with the interaction that carries it, is good for one views.open or
  views.push (`exchanged_trigger_id` after that) within 3 s (`expired_trigger_id`), and an id Slack never issued
  is `invalid_trigger_id`;
- every view is validated (`bot.devtools.block_kit`): `invalid_arguments` with Slack-style messages, or
  `view_too_large`; views.update and views.publish check an optional `hash` (`hash_conflict`), views.update needs a
  view that is still open (`not_found`); a modal holds at most 3 views (`push_limit_reached`);
- a function execution is completed once (then `function_execution_not_found`, the answer Slack documents for an
  execution that has been completed), its outputs must hold the required output parameters
  (`parameter_validation_failed`), and its `xwfp-` token works for 15 minutes and until the completion.

Time is the stand-in's clock (`now`), which tests may move forward instead of sleeping.
"""

from __future__ import annotations

import copy
import itertools
import json
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.devtools.block_kit import options_problems, view_error

if TYPE_CHECKING:
    from bot.devtools.slack_web_api import Call

TEAM_ID = "T0001"
APP_ID = "A0001"
BOT_ID = "BVMBOT0001"
TRIGGER_TTL_SECONDS = 3.0
FUNCTION_TOKEN_TTL_SECONDS = 15 * 60.0
VIEW_STACK_LIMIT = 3
FUNCTION_TOKEN_PREFIX = "xwfp-"  # noqa: S105 — the kind of token, not a secret
SURFACE_METHODS = frozenset(
    {
        "views.open",
        "views.push",
        "views.update",
        "views.publish",
        "functions.completeSuccess",
        "functions.completeError",
    }
)

Answer = dict[str, Any]


@dataclass
class _Trigger:
    user: str
    channel: str | None
    issued_at: float
    exchanged: bool = False


@dataclass
class SlackView:
    """A modal or Home tab as Slack holds it: the view the app sent plus what Slack adds (id, hash, state, block
    and action ids it generated). `opened_from` is the channel of the interaction that opened a modal (None for a
    shortcut or the Home); `versions` counts how often the app published or updated it."""

    id: str
    user: str
    body: dict[str, Any]
    opened_from: str | None = None
    closed: bool = False
    versions: int = 1

    @property
    def type(self) -> str:
        return str(self.body.get("type"))

    @property
    def callback_id(self) -> str:
        return str(self.body.get("callback_id") or "")

    @property
    def private_metadata(self) -> str:
        return str(self.body.get("private_metadata") or "")

    @property
    def hash(self) -> str:
        return str(self.body.get("hash"))

    @property
    def blocks(self) -> list[dict[str, Any]]:
        return list(self.body.get("blocks") or [])

    @property
    def title(self) -> str:
        title = self.body.get("title")
        return str(title.get("text", "")) if isinstance(title, dict) else ""

    def element(self, action_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return (block, element) of the interactive element with this action_id; KeyError when there is none."""
        for block in self.blocks:
            for element in interactive_elements(block):
                if element.get("action_id") == action_id:
                    return block, element
        raise KeyError(f"no element with action_id {action_id!r} in view {self.id} ({self.callback_id})")


@dataclass
class FunctionExecution:
    """One run of a Workflow Builder custom step: its just-in-time token and how the app completed it."""

    id: str
    callback_id: str
    token: str
    started_at: float
    required_outputs: tuple[str, ...] = ()
    outcome: str | None = None  # "success" or "error" once completed
    outputs: dict[str, Any] | None = None
    error: str | None = None


class SlackSurfaces:
    """Triggers, views and function executions, and the Web API methods that act on them."""

    def __init__(self, now: Callable[[], float]):
        self._now = now
        self._ids = itertools.count(1)
        self._triggers: dict[str, _Trigger] = {}
        self.views: dict[str, SlackView] = {}
        self._homes: dict[str, str] = {}  # user -> the id of their Home view
        self._stacks: dict[str, list[str]] = {}  # user -> ids of the views of their open modal, bottom first
        self.executions: dict[str, FunctionExecution] = {}

    # --- what the driver sets up --------------------------------------------------------------------------

    def issue_trigger(self, user: str, channel: str | None) -> str:
        """Issue a trigger_id for an interaction by `user` (in `channel`, if it had one), shaped like Slack's."""
        number = next(self._ids)
        trigger_id = f"{7_000_000_000_000 + number}.{1_000_000_000_001}.{secrets.token_hex(16)}"
        self._triggers[trigger_id] = _Trigger(user, channel, self._now())
        return trigger_id

    def start_function(self, callback_id: str, required_outputs: Sequence[str] = ()) -> FunctionExecution:
        """Start a function execution with a fresh just-in-time token."""
        number = next(self._ids)
        execution = FunctionExecution(
            id=f"Fx{number:010d}",
            callback_id=callback_id,
            token=f"{FUNCTION_TOKEN_PREFIX}{number}-{secrets.token_hex(16)}",
            started_at=self._now(),
            required_outputs=tuple(required_outputs),
        )
        self.executions[execution.id] = execution
        return execution

    def token_problem(self, token: str | None) -> str | None:
        """Return the error Slack answers a call made with this just-in-time token (None: not one, or valid)."""
        if not token or not token.startswith(FUNCTION_TOKEN_PREFIX):
            return None
        execution = next((e for e in self.executions.values() if e.token == token), None)
        if execution is None:
            return "invalid_auth"
        # Slack documents that the token stops working at completion or after 15 minutes; which error it then
        # answers is not documented: token_expired ("Authentication token has expired") is the closest it lists.
        if execution.outcome is not None or self._now() - execution.started_at > FUNCTION_TOKEN_TTL_SECONDS:
            return "token_expired"
        return None

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
        """Answer one of SURFACE_METHODS."""
        if method == "views.open":
            return self._open(args)
        if method == "views.push":
            return self._push(args)
        if method == "views.update":
            return self._update(args)
        if method == "views.publish":
            return self._publish(args)
        return self._complete(method, args)

    def _open(self, args: dict[str, Any]) -> Answer:
        view = _decoded(args.get("view"))
        # Slack's order of checks (view or trigger first) is not documented; a bad view leaves the trigger unused.
        refusal = _refusal(view_error(view, "modal")) or self._trigger_problem(args.get("trigger_id"))
        if refusal:
            return refusal
        trigger = self._exchange(str(args["trigger_id"]))
        for old in self.modals(trigger.user):  # a new modal replaces whatever modal the user had open
            old.closed = True
        opened = self._hold(view, trigger.user, opened_from=trigger.channel)
        self._stacks[trigger.user] = [opened.id]
        return {"ok": True, "view": opened.body}

    def _push(self, args: dict[str, Any]) -> Answer:
        view = _decoded(args.get("view"))
        refusal = _refusal(view_error(view, "modal")) or self._trigger_problem(args.get("trigger_id"))
        if refusal:
            return refusal
        user = self._triggers[str(args["trigger_id"])].user
        stack = self.modals(user)
        if not stack:
            return {"ok": False, "error": "not_found"}
        if len(stack) >= VIEW_STACK_LIMIT:
            return {"ok": False, "error": "push_limit_reached"}
        self._exchange(str(args["trigger_id"]))
        return {"ok": True, "view": self.push(stack[-1], view).body}

    def _update(self, args: dict[str, Any]) -> Answer:
        view = _decoded(args.get("view"))
        current = self.views.get(str(args.get("view_id") or ""))
        if current is None and args.get("external_id"):
            current = next((v for v in self.views.values() if v.body.get("external_id") == args["external_id"]), None)
        if current is None or current.closed:
            return {"ok": False, "error": "not_found"}
        refusal = _refusal(view_error(view, current.type))
        if refusal:
            return refusal
        if args.get("hash") and args["hash"] != current.hash:
            return {"ok": False, "error": "hash_conflict"}
        return {"ok": True, "view": self.replace(current, view).body}

    def _publish(self, args: dict[str, Any]) -> Answer:
        user = str(args.get("user_id") or "")
        if not user:
            return _invalid(_missing("user_id"))
        view = _decoded(args.get("view"))
        refusal = _refusal(view_error(view, "home"))
        if refusal:
            return refusal
        current = self.home(user)
        if current is not None and args.get("hash") and args["hash"] != current.hash:
            return {"ok": False, "error": "hash_conflict"}
        if current is None:
            current = self._hold(view, user, opened_from=None)
            self._homes[user] = current.id
        else:
            self.replace(current, view)
        return {"ok": True, "view": current.body}

    def _complete(self, method: str, args: dict[str, Any]) -> Answer:
        execution = self.executions.get(str(args.get("function_execution_id") or ""))
        if execution is None or execution.outcome is not None:
            return {"ok": False, "error": "function_execution_not_found"}
        if method == "functions.completeError":
            if not args.get("error"):
                return _invalid(_missing("error"))
            execution.outcome, execution.error = "error", str(args["error"])
            return {"ok": True}
        outputs = _decoded(args.get("outputs"))
        if not isinstance(outputs, dict) or any(outputs.get(name) in (None, "") for name in execution.required_outputs):
            return {"ok": False, "error": "parameter_validation_failed"}
        execution.outcome, execution.outputs = "success", outputs
        return {"ok": True}

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
                return _invalid(*problems)
        elif action in ("update", "push"):
            refusal = _refusal(view_error(answer.get("view"), "modal"))
            if refusal:
                return refusal
            if action == "update":
                self.replace(view, answer["view"])
            elif len(self.modals(view.user)) >= VIEW_STACK_LIMIT:
                return {"ok": False, "error": "push_limit_reached"}
            else:
                self.push(view, answer["view"])
        elif action == "clear":
            self.close(view, everything=True)
        else:
            return _invalid(f"[ERROR] unknown response_action {action!r} [json-pointer:/response_action]")
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
        current.body = {**_held_body(view, current.id, self._hash()), **kept}
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
        body = _held_body(view, view_id, self._hash())
        body.update(previous_view_id=previous, root_view_id=root or view_id)
        held = SlackView(view_id, user, body, opened_from=opened_from)
        self.views[view_id] = held
        return held

    def _trigger_problem(self, trigger_id: Any) -> Answer | None:
        """Return Slack's refusal of a trigger_id (None when it can be exchanged now)."""
        if not trigger_id:
            return _invalid(_missing("trigger_id"))
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


class SurfacesStandIn:
    """The Slack stand-in's side of the surfaces: what the driver registers, what tests look at, and what the bot
    answered Slack outside the Web API. `FakeSlackWebApi` mixes it in; its lock guards `surfaces`."""

    _lock: threading.Condition
    calls: list[Call]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._clock_offset = 0.0
        self.surfaces = SlackSurfaces(self.now)

    def now(self) -> float:
        """Return the stand-in's clock (time.monotonic() plus what advance_clock added): trigger ids and
        just-in-time tokens expire by it."""
        return time.monotonic() + self._clock_offset

    def advance_clock(self, seconds: float) -> None:
        """Move the stand-in's clock forward, so a test can outlive a trigger_id (3 s) or a function's token
        (15 minutes) without waiting. Rate limits and delays keep real time, as the bot waits them out for real."""
        with self._lock:
            self._clock_offset += seconds

    def _record(self, method: str, args: dict[str, Any], status: int, response: dict[str, Any]) -> Call:
        """Keep something Slack was told outside the Web API (an answer to a submission...); hold the lock."""
        from bot.devtools.slack_web_api import Call  # imported here: that module builds on this one

        call = Call(method, args, status=status, response=response)
        self.calls.append(call)
        self._lock.notify_all()
        return call

    def issue_trigger(self, user: str, channel: str | None = None) -> str:
        """Issue the trigger_id of an interaction by `user` (in `channel`, if it had one): the driver does this
        for every command, click, shortcut and submission it sends; views.open takes it within 3 s, once."""
        with self._lock:
            return self.surfaces.issue_trigger(user, channel)

    def start_function(self, callback_id: str, required_outputs: Sequence[str] = ()) -> FunctionExecution:
        """Start a Workflow Builder function execution with a fresh `xwfp-` token (the driver does this when it
        sends function_executed); completing it needs every output named in `required_outputs`."""
        with self._lock:
            return self.surfaces.start_function(callback_id, required_outputs)

    def function_execution(self, execution_id: str) -> FunctionExecution:
        """Return a function execution as it stands now (its outcome, outputs or error once completed)."""
        with self._lock:
            return self.surfaces.executions[execution_id]

    def home(self, user: str) -> SlackView | None:
        """Return the Home tab the bot published for a user (None before the first views.publish)."""
        with self._lock:
            return self.surfaces.home(user)

    def modals(self, user: str) -> list[SlackView]:
        """Return the views of the modal a user has open, bottom first; the last is on screen ([] when none)."""
        with self._lock:
            return self.surfaces.modals(user)

    def view(self, view_id: str) -> SlackView:
        """Return any view (open, closed, or a Home) by its id."""
        with self._lock:
            return self.surfaces.views[view_id]

    def close_view(self, view_id: str, *, everything: bool = False) -> None:
        """Close a modal's view as its user does with Cancel (with `everything`, the whole modal)."""
        with self._lock:
            self.surfaces.close(self.surfaces.views[view_id], everything=everything)
            self._lock.notify_all()

    def view_submission_answered(self, view_id: str, status: int, answer: dict[str, Any]) -> Call:
        """Record and apply the bot's answer to the submission of a view (response_action errors, update, push,
        clear, or a bare ack that closes it), refusing what Slack would not take; return the record."""
        with self._lock:
            if status != 200:
                response: dict[str, Any] = {"ok": False, "error": f"http_{status}"}
            else:
                response = self.surfaces.submission_answered(view_id, answer)
            return self._record("view_submission", {"view_id": view_id, **answer}, status, response)

    def options_answered(self, action_id: str, status: int, answer: dict[str, Any]) -> Call:
        """Record the bot's answer to a block_suggestion, refused when Slack could not show it (more than 100
        options, an option text over 75 characters, ...); return the record."""
        problems = options_problems(answer) if status == 200 else []
        response: dict[str, Any] = {"ok": status == 200 and not problems}
        if status != 200:
            response["error"] = f"http_{status}"
        elif problems:
            # Slack shows the user a failed menu and tells the app nothing; the code names the same fault as views.
            response.update(error="invalid_arguments", response_metadata={"messages": problems})
        with self._lock:
            return self._record("block_suggestion", {"action_id": action_id, **answer}, status, response)


def _held_body(view: dict[str, Any], view_id: str, view_hash: str) -> dict[str, Any]:
    """Return a view as Slack answers and later sends it: the app's fields plus Slack's, ids filled in."""
    blocks = [_with_ids(block) for block in view.get("blocks", [])]
    return {
        "id": view_id,
        "team_id": TEAM_ID,
        "type": view.get("type"),
        "blocks": blocks,
        "private_metadata": view.get("private_metadata", ""),
        "callback_id": view.get("callback_id", ""),
        "state": {"values": {}},
        "hash": view_hash,
        "title": view.get("title"),
        "clear_on_close": bool(view.get("clear_on_close", False)),
        "notify_on_close": bool(view.get("notify_on_close", False)),
        "close": view.get("close"),
        "submit": view.get("submit"),
        "previous_view_id": None,
        "root_view_id": view_id,
        "app_id": APP_ID,
        "external_id": view.get("external_id", ""),
        "app_installed_team_id": TEAM_ID,
        "bot_id": BOT_ID,
    }


def _with_ids(block: dict[str, Any]) -> dict[str, Any]:
    """Copy a block, giving it and its interactive elements the random ids Slack gives those that have none."""
    block = copy.deepcopy(block)
    block.setdefault("block_id", secrets.token_urlsafe(3))
    for element in interactive_elements(block):
        if element.get("type") not in ("mrkdwn", "plain_text", "image"):
            element.setdefault("action_id", secrets.token_urlsafe(3))
    return block


def interactive_elements(block: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the interactive elements of a block (an input's element, a section's accessory, actions' elements)."""
    if block.get("type") == "input":
        return [block["element"]] if isinstance(block.get("element"), dict) else []
    if block.get("type") == "section":
        return [block["accessory"]] if isinstance(block.get("accessory"), dict) else []
    if block.get("type") == "actions":
        return [e for e in block.get("elements", []) if isinstance(e, dict)]
    return []


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


def _decoded(value: Any) -> Any:
    """Decode an argument sent as a JSON string (form encoding) or as JSON already."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _refusal(error: tuple[str, list[str]] | None) -> Answer | None:
    if error is None:
        return None
    code, messages = error
    answer: Answer = {"ok": False, "error": code}
    if messages:
        answer["response_metadata"] = {"messages": messages}
    return answer


def _invalid(*messages: str) -> Answer:
    """Return Slack's answer to arguments it cannot take, with its messages."""
    return {"ok": False, "error": "invalid_arguments", "response_metadata": {"messages": list(messages)}}


def _missing(name: str) -> str:
    # The wording of Slack's message for a missing argument was not confirmed; the error code is invalid_arguments.
    return f"[ERROR] missing required field: {name} [json-pointer:/{name}]"
