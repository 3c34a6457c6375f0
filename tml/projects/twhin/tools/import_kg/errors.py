"""The one error type of the importer, shared by every stage that can reject input."""


class KgImportError(ValueError):
    """Input that cannot be imported; the message names the file and, for rows, the line."""
