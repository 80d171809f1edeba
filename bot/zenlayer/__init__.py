"""Zenlayer VM API: `client` (httpx), `signing` (ZC2-HMAC-SHA256), `errors` (typed failures), `simulator`.

Nothing is imported here on purpose: the domain imports `bot.zenlayer.errors`, and that must not drag in httpx.
"""
