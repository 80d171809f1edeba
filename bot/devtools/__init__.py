"""Development tools that ship on purpose: the Zenlayer simulator, the Slack Web API stand-in and request driver,
and `vm-bot demo`. Production code never imports this package."""
