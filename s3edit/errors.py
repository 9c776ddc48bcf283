"""Errors that the CLI turns into one line on stderr and a documented exit code."""


class S3EditError(Exception):
    """A failure the user can act on; its message is shown as is, without a traceback."""

    exit_code = 1


class UsageError(S3EditError):
    exit_code = 2


class VideoError(S3EditError):
    """The input is not a readable video (empty, truncated, not a video at all)."""


class NoFaceError(S3EditError):
    """No face was found in any frame of the video."""

    exit_code = 3
