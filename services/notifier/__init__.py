"""Webhook notifier (issue 15): tells customers' applications what happened to each recording.

:mod:`.fanout` queues a delivery per event and subscribed endpoint, :mod:`.deliver` sends each
(signed per Standard Webhooks v1 by :mod:`.signing`, through the SSRF guard of :mod:`.targets`),
retrying by :mod:`.policy`; :mod:`.service` wires them. See docs/webhooks.md.
"""
