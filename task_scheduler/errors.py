"""The error hierarchy: one root, a leaf per HTTP status. Every part raises these; the HTTP layer
turns them into answers."""

from __future__ import annotations

from typing import Optional


class SchedulerError(Exception):
    """Root of our errors; ``status`` is the HTTP status, ``details`` lists field errors."""

    status = 500
    code = "error"

    def __init__(self, message: str, details: Optional[list] = None):
        super().__init__(message)
        self.details = details or []


class BadRequest(SchedulerError, ValueError): status = 400; code = "bad_request"  # noqa: E701,E702
class Unauthorized(SchedulerError): status = 401; code = "unauthorized"  # noqa: E701,E702
class Forbidden(SchedulerError): status = 403; code = "forbidden"  # noqa: E701,E702
class JobNotFound(SchedulerError, LookupError): status = 404; code = "not_found"  # noqa: E701,E702
class RunNotFound(SchedulerError, LookupError): status = 404; code = "not_found"  # noqa: E701,E702
class JobConflict(SchedulerError): status = 409; code = "conflict"  # noqa: E701,E702
class PayloadTooLarge(SchedulerError): status = 413; code = "too_large"  # noqa: E701,E702
class UnsupportedMedia(SchedulerError): status = 415; code = "unsupported_media_type"  # noqa: E701,E702
class InvalidJob(SchedulerError, ValueError): status = 422; code = "invalid"  # noqa: E701,E702
class InvalidQuery(SchedulerError, ValueError): status = 422; code = "invalid"  # noqa: E701,E702
class Unavailable(SchedulerError): status = 503; code = "unavailable"  # noqa: E701,E702
class NotFound(SchedulerError, LookupError): status = 404; code = "not_found"  # noqa: E701,E702
class InvalidValue(SchedulerError, ValueError): status = 422; code = "invalid"  # noqa: E701,E702
class InvalidConfig(InvalidJob): code = "invalid_config"  # noqa: E701,E702


class NotLeader(SchedulerError):
    """A write for the leader was refused: another node holds the lease now (fencing)."""
