"""Webhook notifier (issue 15): signs deliveries and guards where they may be sent.

So far only its building blocks: :mod:`.signing` (Standard Webhooks v1) and :mod:`.targets`
(URL rules and the SSRF guard around aiohttp).
"""
