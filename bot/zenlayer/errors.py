"""The failures the Zenlayer client raises: the port's errors (bot.domain.vm_errors), under the adapter's names."""

from __future__ import annotations

from bot.domain.vm_errors import *  # noqa: F403 — every port error, so adapter code and its tests import one place
from bot.domain.vm_errors import VmError

# Every failure of a Zenlayer call: the very class the domain catches as VmError.
ZenlayerError = VmError
