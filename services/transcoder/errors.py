"""The transcoder's small exception tree. Every message is one sentence: a quarantine reason."""

from __future__ import annotations


class TranscoderError(Exception):
    """Base class: the recording cannot be turned into output files as it is."""


class PlanError(TranscoderError):
    """The capture holds something that can never be remuxed (codec, name): quarantine it."""


class SegmentInvalid(TranscoderError):
    """A capture segment is missing, has the wrong size or SHA-256, or is not a segment file."""
