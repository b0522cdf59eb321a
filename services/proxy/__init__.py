"""The media proxy: WHIP (RFC 9725) in, encoded-frame capture segments and CAPTURES events out.

Modules: ``whip`` (HTTPS endpoint), ``session`` (one aiortc peer connection per publisher),
``capture`` (frames to segments, never decoded), ``media`` and ``facts`` (pure rules), ``stop``
(consumer ``proxy-stop``), ``salvage`` (recovery after a crash), ``service`` (wiring).
"""
