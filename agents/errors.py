"""One exception type for problems a user can fix; the CLI prints its message as one line and exits non-zero."""


class DuetError(Exception):
    """A user-facing error whose message names the problem and the fix."""


def first_line(error: BaseException) -> str:
    """An exception's message, first line only ("" when it has none), for one-line errors that keep their cause."""
    return (str(error).strip().splitlines() or [""])[0]
