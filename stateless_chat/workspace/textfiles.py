"""Reading a text file the way ``/file`` does: UTF-8, no NUL bytes, at most ``MAX_FILE_BYTES``.

The one set of rules for every file whose text goes into a request: a file added with ``/file``,
the instruction files (``AGENTS.md``), a skill's ``SKILL.md`` and the files beside it, and every
document ``/add`` and ``--docs`` index. A file that breaks a rule is refused with one line
(``CommandError``) saying which.
"""

from __future__ import annotations

from pathlib import Path

from stateless_chat.errors import CommandError

MAX_FILE_BYTES = 1_000_000


def read_text_file(path: Path, *, limit: int = MAX_FILE_BYTES) -> str:
    """Return the UTF-8 text of ``path``; CommandError for a missing, binary, non-UTF-8 or oversize file."""
    if not path.exists():
        raise CommandError(f"no such file: {path}")
    if not path.is_file():
        raise CommandError(f"not a regular file: {path}")
    size = path.stat().st_size
    if size > limit:
        raise CommandError(f"{path} is {size:,} bytes; files over {limit:,} bytes are refused")
    with path.open("rb") as file:
        data = file.read(limit + 1)  # a file that grew since stat() is still read only up to the limit
    if len(data) > limit:
        raise CommandError(f"{path} is over {limit:,} bytes; files over {limit:,} bytes are refused")
    if b"\x00" in data:
        raise CommandError(f"{path} looks binary (it has NUL bytes); only text files can be added")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CommandError(f"{path} is not UTF-8 text (bad byte at offset {error.start}); not added") \
            from None


__all__ = ["MAX_FILE_BYTES", "read_text_file"]
