"""Who and what the demo plays: the people, the channel, the instances, its timings."""

from __future__ import annotations

from bot.config import SETTING_NAMES
from bot.devtools.slack_messages import BOT_USER_ID

ALICE, BOB = "U0ALICE", "U0BOB"
CHANNEL, CHANNEL_NAME = "C0DEMO", "ops"
USERS = {ALICE: "alice", BOB: "bob", BOT_USER_ID: "vm-bot"}
CHANNELS = {CHANNEL: CHANNEL_NAME}
INSTANCES = ("web-1", "web-2")  # names; the simulator gives them opaque ids, as Zenlayer does
GROUP = "web-team"
# What the simulator serves: alice's two web servers in her team's resource group, and a database she may not start.
SIMULATED = (
    f"name=web-1,group={GROUP},zone=SEL-A,tag=team=web",
    f"name=web-2,group={GROUP},zone=FRA-A,tag=team=web",
    "name=db-1,group=data,zone=SEL-A,tag=team=data",
)
BOOT_SECONDS = 2
STOP_SECONDS = 1
# alice's start is a time-boxed run: reminded at half-time, extended once from the reminder, then stopped on time.
RUN_FOR = "20s"
EXTEND_SECONDS = 10  # RUN_EXTEND_SECONDS for the demo (an hour by default)
AUTO_STOPPED = "Stopped after 30 s (time-boxed run)"
FINAL_REPLY = f"All {len(INSTANCES)} instances RUNNING"  # the last thread reply
FINAL_PROGRESS = f"All {len(INSTANCES)} RUNNING"  # the confirmation's progress line once done

DEADLINE_SECONDS = 90.0  # the whole run (the time-boxed run alone takes half a minute), so a broken bot fails
STOP_GRACE_SECONDS = 5.0
SPEAKER_WIDTH = 8  # "@alice  " / "vm-bot  "
THREAD_PREFIX = "  └ "
LOG_TAIL_LINES = 40

# Every setting vm-bot reads; children get exactly these, so neither the caller's environment nor a `.env` leaks in.
VM_BOT_VARIABLES = SETTING_NAMES
