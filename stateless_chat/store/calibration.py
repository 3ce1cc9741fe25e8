"""``calibration.json`` in the data folder: the calibrations of endpoints and models, and the chat
templates learned from model files (``core.calibration``), kept between chats.

The file is private (mode 0600), written whole through a temporary file beside it, under a lock
(``store.filelock``), so chats that share the folder take turns and none drops what another wrote
under another key. A file that cannot be read is left as it is and never written: nothing in it
is lost, and the chat goes on with what it learns in memory.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stateless_chat.core.calibration import Calibration, Template
from stateless_chat.store.filelock import exclusive

FILE_NAME = "calibration.json"
VERSION = 1


@dataclass
class CalibrationStore:
    """``calibration.json`` in the data folder: a ``Calibration`` per endpoint and model, and the chat
    template learned from a server's tokenizer, per model (learning it may take several requests).

    ``problem`` says why the file is not used (unreadable, not ours); then nothing is written to it.
    """

    path: Path
    entries: dict[str, Calibration] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)
    problem: str = ""

    @staticmethod
    def open(path: Path) -> CalibrationStore:
        """Return the store at ``path`` as it is now (empty when there is no file yet)."""
        entries, templates, problem = _read(path)
        return CalibrationStore(path, entries, templates, problem)

    def get(self, key: str) -> Calibration:
        return self.entries.get(key, Calibration())

    def template(self, key: str) -> Template | None:
        return self.templates.get(key)

    def put(self, key: str, calibration: Calibration) -> None:
        """Keep ``calibration`` under ``key`` and write the file (see ``_update``)."""
        self.entries[key] = calibration
        self._update(lambda entries, templates: entries.__setitem__(key, calibration))

    def put_template(self, key: str, template: Template) -> None:
        """Keep ``template`` under ``key`` and write the file (see ``_update``)."""
        self.templates[key] = template
        self._update(lambda entries, templates: templates.__setitem__(key, template))

    def _update(self, change: Callable[[dict[str, Calibration], dict[str, Template]], None]) -> None:
        """Apply ``change`` to the file as it is now, under its lock: what other chats wrote meanwhile
        under other keys is kept. An ``OSError`` leaves the file as it was (the caller says so)."""
        if self.problem:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with exclusive(self.path):
            entries, templates, problem = _read(self.path)
            if problem:
                self.problem = problem
                return
            change(entries, templates)
            _write(self.path, {"version": VERSION, "entries": {k: v.to_json() for k, v in entries.items()},
                               "templates": {k: v.to_json() for k, v in templates.items()}})


def _read(path: Path) -> tuple[dict[str, Calibration], dict[str, Template], str]:
    """Return the calibrations and templates in the file at ``path`` (none when there is no file) and why
    it cannot be used ("" when it can)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}, {}, ""
    except OSError as error:
        return {}, {}, f"{path} cannot be read ({error.strerror or error})"
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return {}, {}, f"{path} is not valid JSON: left as it is"
    if not isinstance(data, Mapping) or data.get("version") != VERSION or not isinstance(data.get("entries"),
                                                                                          Mapping):
        return {}, {}, f"{path} is not a calibration file of this version: left as it is"
    entries = {str(k): Calibration.from_json(v) for k, v in data["entries"].items()}
    stored = data.get("templates")
    templates = {}
    for key, value in (stored.items() if isinstance(stored, Mapping) else ()):
        template = Template.from_json(value)
        if template is not None:
            templates[str(key)] = template
    return entries, templates, ""


def _write(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, mode 0600, through a temporary file beside it."""
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:  # mkstemp made it 0600
            json.dump(data, f, separators=(",", ":"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise


__all__ = ["FILE_NAME", "CalibrationStore"]
