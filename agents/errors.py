"""One exception type for problems a user can fix; the CLI prints its message as one line and exits non-zero."""


class DuetError(Exception):
    """A user-facing error whose message names the problem and the fix."""
