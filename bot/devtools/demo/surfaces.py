"""`vm-bot demo`, continued: the App Home and the start modal (issue 20), after the typed conversation.

Alice opens vm-bot's Home tab (her recent request, a Start instances button), opens the start modal from it, picks
the channel, types to find instances (only those her grant covers are offered, with their status), asks to start a
new machine of her team's, confirms in the channel as usual, and sees her Home follow along. The views the bot
publishes and opens are printed as she sees them; channel messages come through the usual transcript.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from bot.devtools.demo.conversation import Conversation
from bot.devtools.demo.processes import DemoFailed
from bot.devtools.demo.render import format_entry, render_buttons, render_message, render_mrkdwn
from bot.devtools.demo.script import ALICE, CHANNEL, CHANNEL_NAME
from bot.devtools.slack_views import SlackView, view_text
from bot.slack import action_ids

NEW_INSTANCE = {"name": "web-3", "resourceGroup": "web-team", "zone": "SEL-A", "tags": {"team": "web"}}


def render_view(view: SlackView, *, where: str) -> list[str]:
    """Return the lines a Home tab or a modal shows: its blocks, inputs as `Label: what is in them`."""

    lines = [f"({where}) {view.title}".rstrip()] if view.type == "modal" else [f"({where})"]
    for block in view.blocks:
        if block.get("type") == "input":
            lines.append(f"{block['label']['text']}: {_input_shows(block['element'])}")
        else:
            lines += render_message("", [block])
    if view.type == "modal":
        buttons = [view.body[k] for k in ("close", "submit") if view.body.get(k)]
        lines.append(render_buttons([{"type": "button", "text": b} for b in buttons]))
    return lines


def _input_shows(element: Mapping[str, Any]) -> str:
    """What an input shows before the user touches it: its preset value, else its placeholder."""

    if element.get("initial_conversation"):
        return render_mrkdwn(f"<#{element['initial_conversation']}>")
    placeholder = element.get("placeholder", {}).get("text", "")
    return f"({placeholder.lower()})" if placeholder else "(empty)"


def render_options(options: Sequence[Mapping[str, Any]]) -> list[str]:
    """Return a type-ahead's options as the menu lists them."""
    return [f"• {o['text']['text']}" for o in options] or ["(no options)"]


def play(conversation: Conversation, simulator_url: str) -> None:
    """Alice's Home, the start modal from it, and the start it leads to."""

    driver, transcript, fake = conversation.driver, conversation.transcript, conversation.fake

    def show(speaker: str, lines: Sequence[str]) -> None:
        transcript.catch_up()
        transcript.write(format_entry(speaker, lines))

    def seen(condition: Any, what: str) -> Any:
        return conversation.follow(condition, what)

    try:
        httpx.post(f"{simulator_url}/_simulator/instances", json=NEW_INSTANCE, timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise DemoFailed(f"could not add {NEW_INSTANCE['name']} at the simulator: {exc!r}", conversation.bot) from exc
    transcript.write(
        f"\n(Someone adds {NEW_INSTANCE['name']} to the resource group web-team in Zenlayer's console.)\n\n"
    )

    transcript.user(ALICE, "opens vm-bot's Home tab")
    driver.open_home(ALICE)
    home = seen(lambda: _home_showing(fake, ALICE, "Your recent requests"), "alice's Home")
    show("vm-bot", render_view(home, where="alice's Home"))

    transcript.user(ALICE, "clicks [ Start instances ] on her Home")
    driver.click_home_button(action_ids.HOME_START, user=ALICE)
    modal = seen(lambda: _modal(fake, ALICE), "the start modal")
    show("vm-bot", render_view(modal, where="a form only @alice sees"))

    picks = {action_ids.MODAL_CHANNEL: CHANNEL}
    transcript.user(ALICE, f"picks #{CHANNEL_NAME}, then types `web` in Instances")
    offered = driver.suggest(modal, action_ids.MODAL_INSTANCES, "web", values=picks)
    show("vm-bot", ["(the menu lists)", *render_options(offered)])
    transcript.user(ALICE, "types `db` instead")
    show(
        "vm-bot",
        ["(the menu lists)", *render_options(driver.suggest(modal, action_ids.MODAL_INSTANCES, "db", values=picks))],
    )
    new = next((o["value"] for o in offered if o["text"]["text"].startswith(f"{NEW_INSTANCE['name']} ")), None)
    if new is None or any("db-" in o["text"]["text"] for o in offered):
        raise DemoFailed(f"the type-ahead did not offer just alice's instances: {offered}", conversation.bot)

    transcript.user(ALICE, f"picks {NEW_INSTANCE['name']} and presses [ Ask to start ]")
    answer = driver.submit_view(modal, {**picks, action_ids.MODAL_INSTANCES: [new]})
    if answer.get("response_action") != "update":
        raise DemoFailed(f"the form was not taken: {answer}", conversation.bot)
    show("vm-bot", render_view(fake.view(modal.id), where="the form"))
    confirmation = conversation.confirmation()
    if confirmation.request_id == 0 or f"`{new}`" not in view_text_of(fake, confirmation):
        raise DemoFailed("the form did not lead to the usual confirmation", conversation.bot)

    conversation.click(ALICE, confirmation, action_ids.START, "Start")
    conversation.thread_reply(confirmation, "RUNNING in")
    transcript.user(ALICE, "looks at her Home again")
    home = seen(lambda: _home_showing(fake, ALICE, f"start `{new}`"), "alice's Home with her new request")
    seen(lambda: _home_showing(fake, ALICE, ":large_green_circle: done", times=2), "alice's Home, both done")
    show("vm-bot", render_view(fake.home(ALICE) or home, where="alice's Home, published again by vm-bot"))


def _home_showing(fake: Any, user: str, text: str, *, times: int = 1) -> SlackView | None:
    home = fake.home(user)
    return home if home is not None and view_text(home).count(text) >= times else None


def _modal(fake: Any, user: str) -> SlackView | None:
    stack = fake.modals(user)
    return stack[-1] if stack and stack[-1].callback_id == action_ids.START_MODAL else None


def view_text_of(fake: Any, confirmation: Any) -> str:
    """The text a confirmation shows (its blocks included)."""
    from bot.devtools.slack_messages import message_text

    return message_text(fake.messages[(confirmation.channel, confirmation.ts)])
