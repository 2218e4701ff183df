"""Errors broaden raises on purpose. The app maps each to a 4xx with a message."""


class BroadenError(Exception):
    """Base of every error broaden raises deliberately."""

    status_code = 400


class PayloadError(BroadenError):
    """A request body that is well-formed JSON but not what the endpoint takes."""

    status_code = 422


class UnsupportedConfig(BroadenError):
    """A label config broaden cannot serve (no Choices over an object it can read)."""

    status_code = 422


class UnknownProject(BroadenError):
    """A project broaden has not been set up for."""

    status_code = 404


class MediaError(BroadenError):
    """One media item could not be fetched or decoded; fails that task only."""


class OutOfTime(MediaError):
    """The request's time budget ran out before this media item was fetched; it is left for later."""


class LabelStudioUnavailable(BroadenError):
    """Label Studio did not answer, or refused our credentials."""

    status_code = 502


class LabelStudioRefused(LabelStudioUnavailable):
    """Label Studio answered a request with a 4xx (other than 408 or 429): asking again later would
    be refused again, so a job that meets it fails at once rather than retrying."""
