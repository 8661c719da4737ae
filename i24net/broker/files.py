"""Writing generated broker files: atomically, and private files with mode 0600 from the start.

A broker that restarts while its config is being regenerated must never read half a file, so
every file is written to a temporary name in the same directory and renamed over the old one.
Files holding secrets (password hashes, ACLs, private keys, plaintext passwords handed to a
child process) are created 0600, never chmod-ed afterwards, so they are not readable by others
even for an instant.
"""

from __future__ import annotations

import os
from pathlib import Path

from i24net.broker.errors import BrokerConfigError

__all__ = ["ensure_directory", "write_file"]

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644


def ensure_directory(directory: Path, *, mode: int = 0o700) -> Path:
    """Create ``directory`` (and parents) if needed; refuse a path that is a file."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True, mode=mode)
    except FileExistsError as exc:
        raise BrokerConfigError(
            f"{path} exists and is not a directory; choose another path"
        ) from exc
    except OSError as exc:
        raise BrokerConfigError(f"cannot create directory {path}: {exc.strerror}") from exc
    return path


def write_file(path: Path, data: str | bytes, *, private: bool) -> Path:
    """Write ``data`` to ``path`` atomically; ``private`` files get mode 0600, others 0644."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    mode = PRIVATE_MODE if private else PUBLIC_MODE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            os.fchmod(fd, mode)  # the umask may have narrowed or the file pre-existed
            os.write(fd, payload)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise BrokerConfigError(f"cannot write {path}: {exc.strerror}") from exc
    return path
