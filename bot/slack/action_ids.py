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
