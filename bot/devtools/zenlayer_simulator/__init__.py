"""A local, Zenlayer-compatible VM API for tests, demos and staging — it checks signatures like the real one.

Serves ``POST /api/v2/vm`` with the ``X-ZC-Action`` header set to ``StartInstances``, ``StopInstances``,
``RebootInstances``, ``DescribeInstancesStatus`` or ``DescribeInstances``, using the envelopes of Zenlayer API 2.0:
success ``{"requestId", "response": {"requestId", ...}}`` with HTTP 200, failure ``{"requestId", "code",
"message"}`` with HTTP 4xx/5xx. Every request must carry either a ZC2-HMAC-SHA256 signature made with the
configured key pair (verified over the raw body bytes with the received Host and Content-Type, timestamp within
``max_skew_seconds``) or ``Authorization: Bearer <token>`` matching the configured token; a simulator without any
credentials refuses to start, because an auth-less fake would hide signing bugs.

``DescribeInstances`` rows carry ``instanceName``, ``zoneId``, ``resourceGroupId`` / ``resourceGroupName`` (a
group's id is derived from its name; instances without one are in "Default Resource Group"), ``tags`` as
``{"tags": [{"key", "value"}]}``, ``instanceType``, ``cpuCount``, ``memory`` and public/private IPs from the
documentation ranges. It filters by ``instanceIds`` (at most 100), ``instanceName`` (exact, or a prefix when it ends
with ``*``), ``resourceGroupId``, ``zoneId``, ``instanceStatus``, ``tagKeys`` and ``tags``, with ``pageSize`` (at most
1000, default 20) / ``pageNum`` paging and ``totalCount``.

Instances move ``STOPPED -> BOOTING -> RUNNING`` after ``StartInstances`` (taking ``boot_seconds``),
``RUNNING -> STOPPING -> STOPPED`` after ``StopInstances`` (``stop_seconds``) and ``RUNNING -> REBOOT -> RUNNING``
after ``RebootInstances`` (``reboot_seconds``), computed lazily from a monotonic clock, so reads are deterministic
and need no timer threads. Each of the three is all-or-nothing: one missing id gives 404
``INVALID_INSTANCE_NOT_FOUND``, one id in the recycle bin (RECYCLE) 403 ``OPERATION_DENIED_INSTANCE_RECYCLED``, one
id in the wrong status 403 ``OPERATION_DENIED_INSTANCE_NOT_STOPPED`` (start: not STOPPED),
``OPERATION_DENIED_INSTANCE_NOT_RUNNING`` (stop: not RUNNING) or ``OPERATION_DENIED_INSTANCE_STATUS`` (reboot: not
RUNNING); an empty list or more than 100 ids 400 ``INVALID_PARAMETER_VALUE``. ``StopInstances`` takes an optional
boolean ``forceShutdown`` (anything else: 400); the call log keeps it as sent (``SimulatedCall.force_shutdown``,
None when absent — which Zenlayer treats as a forced shutdown).

Control endpoints (plain JSON, no authentication — bind to loopback), for scripting a simulator that runs in
another process. Error replies are ``{"error": "..."}`` with HTTP 400 or 404.

``GET /_simulator/health``
    ``{"ok": true}``.
``GET /_simulator/instances``
    ``{"instances": [{"instanceId", "instanceName", "instanceStatus", "zoneId", "resourceGroupId",
    "resourceGroupName", "tags"}, ...]}``.
``POST /_simulator/instances``
    Body ``{"instanceId": "web-1", "status": "STOPPED", "name": "web-1", "zone": "SEL-A", "resourceGroup":
    "dev-team", "tags": {"team": "web"}, "instanceType": "z2a.cpu.1"}`` (all but ``instanceId`` optional; without
    it, ``name`` is required and a new instance gets an opaque numeric id) or ``{"instances": [<such objects>]}``.
    Adds new instances; for existing ones sets only the fields given (tags replace all tags; a status is set at
    once, cancelling any transition). Replies with the instances, including the id that was made up.
``DELETE /_simulator/instances/<id>``
    Removes an instance (404 when unknown).
``POST /_simulator/console/<verb>``
    Body ``{"instanceIds": [...]}``; ``<verb>`` is ``start``, ``stop``, ``reboot``, ``recycle`` or ``release``:
    what someone in Zenlayer's console does behind the bot's back, recorded as no API call. Start, stop and
    reboot follow the API's rules and timings (refusals come back with the API's status and ``code``); recycle puts
    the instances in the recycle bin (RECYCLE) at once; release removes them (404 from then on). Replies with the
    instances still there. The same as ``ZenlayerSimulator.console_<verb>(*ids)`` in Python.
``GET /_simulator/calls`` / ``DELETE /_simulator/calls``
    ``{"calls": [{"action", "instanceIds", "params", "httpStatus", "code", "requestId", "time"}, ...]}`` for
    every request to the API path, oldest first / forget them.
``POST /_simulator/faults``
    Body with the keyword arguments of :meth:`ZenlayerSimulator.fail_next`: ``{"action": "StartInstances",
    "times": 1, "status": 500, "code": "INTERNAL_ERROR", "message": "...", "hang_seconds": null,
    "body": null, "headers": {}, "retry_after": null}``. Replies ``{"faults": <number queued>}``.
``GET /_simulator/faults`` / ``DELETE /_simulator/faults``
    List the queued faults / drop them all.
``GET /_simulator/settings`` / ``POST /_simulator/settings``
    ``{"boot_seconds": 5.0, "stop_seconds": 5.0, "reboot_seconds": 5.0}``: read or change (any of them) how long
    BOOTING, STOPPING and REBOOT last; a change applies to later calls.

The package splits by concern: ``instances`` (the VM model and filters), ``state`` (the cloud: transitions and
the console), ``script`` (faults and the call log), ``api`` (the actions),
``auth`` (signatures and tokens), ``control`` (the routes above, as a table), ``server`` (HTTP and WSGI), ``cli``.

Run it with ``vm-bot simulator --port 8089 --instance web-1 --instance db-1:RUNNING
--instance 'name=api-1,group=dev-team,tag=team=api'`` (the last gets a generated opaque id) and the key pair (or token)
in ``ZENLAYER_ACCESS_KEY_ID`` / ``ZENLAYER_ACCESS_KEY_SECRET`` (or ``ZENLAYER_TOKEN``).
"""

from bot.devtools.zenlayer_simulator.cli import main, parse_instance_specs
from bot.devtools.zenlayer_simulator.instances import DEFAULT_INSTANCES, KNOWN_STATUSES
from bot.devtools.zenlayer_simulator.replies import ApiError
from bot.devtools.zenlayer_simulator.script import Fault, SimulatedCall
from bot.devtools.zenlayer_simulator.server import ZenlayerSimulator

__all__ = [
    "DEFAULT_INSTANCES",
    "KNOWN_STATUSES",
    "ApiError",
    "Fault",
    "SimulatedCall",
    "ZenlayerSimulator",
    "main",
    "parse_instance_specs",
]
