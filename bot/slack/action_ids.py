"""Every Block Kit action id and block id vm-bot uses, in one place."""

START = "vm_start_confirm"
CANCEL = "vm_start_cancel"
APPROVE = "vm_start_approve"
REJECT = "vm_start_reject"

DECISION_ACTIONS = (START, CANCEL, APPROVE, REJECT)

CONFIRM_BLOCK = "vm_confirm_actions"
