"""The one exception type for errors a user can cause (bad task file, bad payload, unknown project)."""


class LabelerError(Exception):
    """A user-caused error; the message names the file, line, field or URL at fault.

    `status` is the HTTP status the API answers with when this reaches a view (4xx).
    """

    def __init__(self, message: str, status: int = 400, field: str | None = None):
        super().__init__(message)
        self.status = status
        self.field = field
