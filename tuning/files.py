"""Files of a run: atomic writes, JSON, a lock shared by the chief and its workers.

A search is killed, interrupted and resumed; every file it leaves must be
either the old version or the new one, never half of each, and readable by
the accounts that serve it (the umask decides, as for a plain `open`).
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[str], Any]) -> None:
    """Write `path` through a temporary file in the same folder, then rename.

    Args:
        path: str. The file to write (its folder is created).
        write: callable. Called with the temporary path; writes the content.

    Example:

        >>> import os, tempfile
        >>> from tuning.files import atomic_write
        >>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
        >>> atomic_write(p, lambda tmp: open(tmp, "w").close())
        >>> os.path.exists(p)
        True
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        # mkstemp creates 0600; give the file the mode a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    """`text` into `path`, atomically."""

    def write(tmp):
        with open(tmp, "w") as f:
            f.write(text)

    atomic_write(path, write)


def write_json(path: str | os.PathLike, value: Any) -> None:
    """`value` as indented JSON into `path`, atomically.

    Example:

        >>> import os, tempfile
        >>> from tuning.files import read_json, write_json
        >>> p = os.path.join(tempfile.mkdtemp(), "a.json")
        >>> write_json(p, {"a": 1}); read_json(p)
        {'a': 1}
    """
    write_text(path, json.dumps(value, indent=2, default=str))


def write_rows(path: str | os.PathLike, rows: list, *, columns: list | None = None) -> None:
    """Dict rows as CSV into `path`, atomically; the columns in order of first appearance.

    Example:

        >>> import os, pathlib, tempfile
        >>> from tuning.files import write_rows
        >>> p = os.path.join(tempfile.mkdtemp(), "a.csv")
        >>> write_rows(p, [{"a": 1}, {"a": 2, "b": 3}])
        >>> pathlib.Path(p).read_text().split()
        ['a,b', '1,', '2,3']
    """
    keys = list(columns or [])
    for r in rows:
        keys += [k for k in r if k not in keys]

    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)


def read_json(path: str | os.PathLike, default: Any = None) -> Any:
    """The JSON value in `path`, or `default` when there is no such file.

    Example:

        >>> from tuning.files import read_json
        >>> read_json("no/such/file.json", {})
        {}
    """
    if not os.path.exists(path):
        return default
    with open(path) as f:
        return json.load(f)


def copy_file(source: str, target: str) -> None:
    """`source` copied to `target`, atomically."""
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))


def publish(stored: str, target: str) -> None:
    """`target` as a second name of `stored` (a hard link: stored once on disk).

    Where hard links are not possible (another file system) it is a copy.

    Example:

        >>> import os, pathlib, tempfile
        >>> from tuning.files import publish
        >>> d = tempfile.mkdtemp()
        >>> _ = pathlib.Path(os.path.join(d, "a")).write_text("model")
        >>> publish(os.path.join(d, "a"), os.path.join(d, "b"))
        >>> pathlib.Path(os.path.join(d, "b")).read_text()
        'model'
    """
    tmp = target + ".link"
    try:
        if os.path.exists(tmp):
            os.remove(tmp)
        os.link(stored, tmp)
        os.replace(tmp, target)
    except OSError:
        copy_file(stored, target)


def _umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(mask)
    return mask


@contextlib.contextmanager
def file_lock(directory: str, name: str):
    """An exclusive lock shared by every process (chief, workers) writing `directory`."""
    import fcntl

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def is_worker() -> bool:
    """Whether this process is one of KerasTuner's workers (not the chief, not alone).

    Example:

        >>> import os
        >>> from tuning.files import is_worker
        >>> is_worker() == (os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief")
        True
    """
    return os.environ.get("KERASTUNER_TUNER_ID", "chief") != "chief"
