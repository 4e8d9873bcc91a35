"""The one exception type users see for bad input (raised on the host, before any launch), and the exit
statuses every command returns."""

#: Exit statuses: ok; a result was incorrect (or an experiment failed); a user error; interrupted (Ctrl-C);
#: stdout closed early.
EXIT_OK, EXIT_INCORRECT, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 0, 1, 2, 130, 141


class DlrmlabError(ValueError):
    """Invalid input or configuration, reported before any GPU work or state change."""
