"""Every Block Kit action id and block id vm-bot uses, in one place."""

START = "vm_start_confirm"
CANCEL = "vm_start_cancel"
APPROVE = "vm_start_approve"
REJECT = "vm_start_reject"

# A time-boxed run's buttons (its reminder, `/vm runs`): one block per start, vm_run_42.
EXTEND = "vm_run_extend"
STOP_RUN = "vm_run_stop"
RUN_BLOCK_PREFIX = "vm_run_"

DECISION_ACTIONS = (START, CANCEL, APPROVE, REJECT, EXTEND, STOP_RUN)

# The instance picker (`/vm list`, or a name several instances share): checkboxes, then one button.
PICK = "vm_pick_instances"  # the checkboxes; Slack reports each tick, which needs only an ack
START_SELECTED = "vm_start_selected"
PICKER_ACTIONS = (PICK, START_SELECTED)
PICK_BLOCK_PREFIX = "vm_pick_"  # one actions block per ten checkboxes: vm_pick_0, vm_pick_1, …
PICK_SUBMIT_BLOCK = "vm_picked"

CONFIRM_BLOCK = "vm_confirm_actions"

# The App Home's buttons (a view of the person's own, so values carry only what Slack names back to us).
HOME_START = "vm_home_start"  # opens the start modal
HOME_APPROVE = "vm_home_approve"  # value: the operation id
HOME_REJECT = "vm_home_reject"
HOME_RUN = "vm_home_run"  # an overflow menu on a run: `extend:ID:INSTANCE` or `stop:ID:INSTANCE`
HOME_ACTIONS = (HOME_START, HOME_APPROVE, HOME_REJECT, HOME_RUN)
# The start modal: its callback_id, and one block and action id per input (field errors are keyed by block id).
START_SHORTCUT = "vm_start_instances"  # the global shortcut's callback_id
START_MODAL = "vm_start_modal"
MODAL_CHANNEL = "vm_modal_channel"
MODAL_INSTANCES = "vm_modal_instances"  # a multi_external_select: type-ahead answered by bot/slack/listeners/options
MODAL_DURATION = "vm_modal_duration"
# The Workflow Builder step (`functions` in manifest.workflow-steps.yml).
START_STEP = "start_zenlayer_instances"
