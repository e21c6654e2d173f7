"""The one error path of the command line.

Every problem a user can cause (a bad file, a bad flag, an output folder that cannot be
written, a corrupt checkpoint, a resource that is not there) is a `UserError`: the command
line prints it as one line naming the file or path, the field and what was expected, and
exits with code 2. Anything else is a bug and keeps its traceback (exit code 1).

Operating-system errors on paths the user chose (permission denied, a file where a
folder is expected, a full disk) are user errors too; `user_message` turns them into the
same kind of line.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path


class UserError(ValueError):
    """A problem the user can fix; printed as one line, exit code 2."""


class InputError(UserError):
    """Bad user input found by a command (exit code 2)."""


class ConfigError(UserError):
    """A configuration problem, printed as `FILE: FIELD: expected ...` on one line."""

    def __init__(self, source: str, field: str, expected: str):
        self.source, self.field, self.expected = source, field, expected
        super().__init__(f"{source}: {field or '<top level>'}: {expected}")


# errno values that say something about the path the user gave, not about the code.
_PATH_ERRNOS = {
    errno.ENOENT: "an existing path (not found)",
    errno.EACCES: "a path this user may write (permission denied)",
    errno.EPERM: "a path this user may write (operation not permitted)",
    errno.EROFS: "a writable path (read-only file system)",
    errno.ENOTDIR: "a folder (a file is in the way)",
    errno.EISDIR: "a file (this is a folder)",
    errno.EEXIST: "a folder (a file is in the way)",
    errno.ENOSPC: "free disk space (the disk is full)",
    errno.EDQUOT: "free disk space (disk quota exceeded)",
}


def free_space(path: str | Path) -> str:
    """Free space on the disk holding `path` (or its nearest existing parent), e.g. '12.0 MiB'."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return "unknown"
    return f"{free / 2**20:.1f} MiB"


def os_error_line(err: OSError) -> str | None:
    """One line for an OSError about a user's path, or None when it is not one of those."""
    expected = _PATH_ERRNOS.get(err.errno or -1)
    if expected is None:
        return None
    path = err.filename if err.filename is not None else "<unknown path>"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        expected += f"; {free_space(path)} free"
    return f"{path}: {expected}"


def user_message(err: BaseException) -> str | None:
    """The one-line message of a user error anywhere in `err`'s chain, else None (a bug).

    Errors raised inside Ray workers arrive wrapped (TrainingFailedError, RayTaskError);
    the chain is followed so that a worker's ConfigError still reads as one line.
    """
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, UserError):
            return " ".join(str(current).split("\n")[0].split())
        if isinstance(current, FileNotFoundError) and current.errno is None:
            return " ".join(str(current).split())  # raised by contrastlab with its own message
        if isinstance(current, OSError):
            line = os_error_line(current)
            if line:
                return line
        cause = getattr(current, "cause", None)  # ray.exceptions.RayTaskError keeps the original here
        current = cause if isinstance(cause, BaseException) else (current.__cause__ or current.__context__)
    return None


__all__ = ["ConfigError", "InputError", "UserError", "free_space", "os_error_line", "user_message"]
