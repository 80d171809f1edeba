"""Views: pure functions that render read models into one Message type (text and Block Kit); no I/O."""
