"""The one exception type for errors a user can cause (bad file, bad key, missing model).

The CLI prints its message on one line, without a traceback, and exits with status 2.
"""


class RlhfError(Exception):
    """A user-caused error; the message names the file, line, field or URL at fault."""
