"""Domain errors: raised by services, mapped to HTTP status codes in `app.main` only."""


class RackhandError(Exception):
    """Base of errors a caller can act on; the message says what to fix."""


class NotFound(RackhandError):
    """The named object does not exist (or is not visible to the caller)."""


class AlreadyExists(RackhandError):
    """A unique name is taken; the message names the existing object."""


class InUse(RackhandError):
    """The object is referenced by others and cannot be removed or changed that way."""


class InvalidInput(RackhandError):
    """The request is well-formed but breaks a catalogue rule."""


class UnknownParameter(InvalidInput):
    """A query parameter the endpoint does not take: refused, so a misspelt filter never lists
    everything."""

    kind = "InvalidInput"


class OverLimit(InvalidInput):
    """A request that would cost more than a stated limit; refused before any of the work."""

    kind = "InvalidInput"


class ForgedCursor(InvalidInput):
    """A paging cursor this server did not give out (edited, truncated, or from another list)."""

    kind = "InvalidInput"

    def __init__(self) -> None:
        super().__init__("cursor is not one this server gave; start again without it")


class AmbiguousReference(RackhandError):
    """A name matches several objects; the caller must narrow it."""


class ImportRejected(RackhandError):
    """An import had bad rows; nothing was written."""

    def __init__(self, errors: list[dict[str, object]]) -> None:
        self.errors = errors
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(
            f"row {first['row']}, field {first['field']!r}: {first['message']}{more}; "
            "nothing was imported"
        )


class ConfigError(RackhandError):
    """The service cannot start with the given settings."""


class FieldError(InvalidInput):
    """A catalogue rule broken by one field; imports report it with the row number."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class Refused(RackhandError):
    """A refusal that is itself audited; `event` is written even though the request fails."""

    def __init__(self, message: str, event: object | None = None) -> None:
        super().__init__(message)
        self.event = event


class Unauthenticated(Refused):
    """No valid credentials: log in, or send `Authorization: Bearer rh_…`."""


class Forbidden(Refused):
    """The caller is known but lacks the role for this site or object."""


class Hidden(Refused):
    """The object is at a site the caller cannot see; answered like a missing object."""

    kind = "NotFound"


class TooManyAttempts(RackhandError):
    """Too many failed logins; wait before trying again."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TooManyExports(RackhandError):
    """The caller (or the server) already streams as many exports as it may; retry later."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeviceUnavailable(RackhandError):
    """The device or every path to it failed (unreachable, wrong credentials, refused)."""
