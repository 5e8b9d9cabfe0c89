"""The one error type a user sees: a bad config, a missing file or dataset, a bad checkpoint.

The CLI prints it as a single line and exits with status 2 before anything is written.
"""


class UserError(Exception):
    """An error in what the user asked for (not a bug): printed as one line, exit code 2."""
