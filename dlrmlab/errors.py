"""The one exception type users see for bad input: raised on the host, before any launch."""


class DlrmlabError(ValueError):
    """Invalid input or configuration, reported before any GPU work or state change."""
