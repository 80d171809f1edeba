"""The OAuth scopes vm-bot's Slack app asks for: the one list the manifests and `vm-bot doctor` agree on."""

from __future__ import annotations

# The bot token's scopes (manifest.yml and manifest.socket-mode.yml, oauth_config.scopes.bot; a test checks them):
# the /vm command, and posting and editing its own messages in the channels it was invited to.
BOT_SCOPES: tuple[str, ...] = ("commands", "chat:write")
# The app-level token's scope in Socket Mode (SLACK_APP_TOKEN): opening the connection.
APP_TOKEN_SCOPES: tuple[str, ...] = ("connections:write",)
