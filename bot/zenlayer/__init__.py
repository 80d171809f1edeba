"""Zenlayer VM API adapter: `client` (httpx), `signing` (ZC2-HMAC-SHA256), `errors` (typed failures).

The simulator is a development tool and lives in `bot.devtools.zenlayer_simulator`.
"""
