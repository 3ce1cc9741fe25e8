"""Skills in the Agent Skills format: a folder holding ``SKILL.md`` (YAML front matter with ``name``
and ``description``, then the instructions) and any files beside it.

Progressive disclosure: every request carries only the skills index, one line per skill with its
name and description (a stable block, after the instructions); a skill's instructions (its body)
enter the request only once it is used: ``/skill NAME`` keeps them in the active skills slot
until ``/skill off NAME``, and the model's ``use_skill`` tool (where tools are offered) returns
them as its result. A skill's other files are readable through that tool, only inside its own
folder.

Skills are looked for in three folders, in this order, and the first skill of a name wins (a
later one of the same name is skipped with one line): ``$XDG_CONFIG_HOME/stateless-chat/skills``
(this program's), ``~/.agents/skills`` (the user's, shared with other agents) and
``./.agents/skills`` (the project's: it comes last, so a checked-out repository cannot shadow
a skill of the user's). A ``SKILL.md`` that is malformed is skipped with one line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from stateless_chat.config import default_config_path
from stateless_chat.errors import CommandError
from stateless_chat.workspace.textfiles import read_text_file

FILE_NAME = "SKILL.md"
MAX_NAME = 64
MAX_DESCRIPTION = 1024
MAX_LISTED_FILES = 50  # files beside a skill that use_skill lists
_NAME = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_-]*)\s*:(?:\s+(.*)|\s*)$")
# The index's framing, as little as can be: this header, then one "- NAME: DESCRIPTION" line per skill
# (with o200k_base, 6 tokens once, the message's 3 included, and 2 a skill). How a skill is loaded is
# said where it is done: in the use_skill tool's description, and by the user's /skill NAME.
INDEX_HEADER = "Skills:"


class SkillError(ValueError):
    """A ``SKILL.md`` that cannot be used: why, in a few words."""


@dataclass(frozen=True)
class Skill:
    """One skill as found: its name, description, folder and instructions (the body)."""

    name: str
    description: str
    folder: Path
    body: str

    def message(self) -> str:
        """Return the text the active skills slot holds for this skill."""
        return f"Skill {self.name} (instructions; its folder: {self.folder}):\n\n{self.body.strip()}"

    def index_line(self) -> str:
        return f"- {self.name}: {self.description}"


@dataclass(frozen=True)
class Catalog:
    """The skills found, by name, and one line for each skill folder that was skipped."""

    skills: tuple[Skill, ...] = ()
    problems: tuple[str, ...] = ()

    def get(self, name: str) -> Skill | None:
        return next((s for s in self.skills if s.name == name), None)

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.skills]


def roots(cwd: Path | None, env: Mapping[str, str]) -> list[Path]:
    """Return the folders skills are looked for in, the one that wins a clash of names first."""
    found = [default_config_path(env).parent / "skills"]
    home = env.get("HOME")
    if home:
        found.append(Path(home) / ".agents" / "skills")
    if cwd is not None:
        found.append(cwd / ".agents" / "skills")
    unique: list[Path] = []
    for root in found:
        if not any(_same(root, seen) for seen in unique):
            unique.append(root)
    return unique


def find(folders: Iterable[Path]) -> Catalog:
    """Return the skills in ``folders`` (each a folder of skill folders), the first of a name winning."""
    skills: dict[str, Skill] = {}
    problems: list[str] = []
    for root in folders:
        try:
            entries = sorted(root.iterdir()) if root.is_dir() else []
        except OSError as error:
            problems.append(f"skills: cannot list {root}: {error.strerror or error}")
            continue
        for folder in entries:
            path = folder / FILE_NAME
            if not folder.is_dir() or not path.is_file():
                continue
            try:
                skill = load(folder)
            except (SkillError, CommandError, OSError) as error:
                reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
                problems.append(f"skills: {path} skipped: {reason}")
                continue
            earlier = skills.get(skill.name)
            if earlier is not None:
                problems.append(f"skills: {path} skipped: the skill {skill.name} in {earlier.folder} comes "
                                "first")
                continue
            skills[skill.name] = skill
    return Catalog(tuple(sorted(skills.values(), key=lambda s: s.name)), tuple(problems))


def load(folder: Path) -> Skill:
    """Return the skill in ``folder``; ``SkillError`` (or ``CommandError`` for the file itself) when its
    ``SKILL.md`` is malformed: no front matter, no or a bad name or description."""
    text = read_text_file(folder / FILE_NAME)
    fields, body = front_matter(text)
    name = fields.get("name", "").strip()
    description = " ".join(fields.get("description", "").split())
    if not name:
        raise SkillError("its front matter has no name")
    if len(name) > MAX_NAME or not _NAME.fullmatch(name):
        raise SkillError(f"the name {name!r} is not lower-case letters, digits and single hyphens "
                         f"(at most {MAX_NAME} characters)")
    if name != folder.name:
        raise SkillError(f"the name {name!r} is not its folder's name ({folder.name!r})")
    if not description:
        raise SkillError("its front matter has no description")
    if len(description) > MAX_DESCRIPTION:
        raise SkillError(f"its description is over {MAX_DESCRIPTION:,} characters")
    if not body.strip():
        raise SkillError("it has no instructions after the front matter")
    return Skill(name, description, folder, body)


def front_matter(text: str) -> tuple[dict[str, str], str]:
    """Return the top-level string fields of ``text``'s YAML front matter and the text after it.

    The subset of YAML a ``SKILL.md`` needs: ``key: value`` lines, values plain, single- or
    double-quoted, or block scalars (``|``, ``>``), and plain values continued on indented lines.
    Nested mappings (``metadata:``) and lists are skipped. ``SkillError`` when there is no front
    matter (``---`` lines around it) or a line cannot be read.
    """
    lines = text.lstrip("\ufeff").splitlines()
    if not lines or lines[0].strip() != "---":
        raise SkillError("it does not start with a front matter (a line ---, then name: and description:)")
    end = next((i for i in range(1, len(lines)) if lines[i].strip() in ("---", "...")), None)
    if end is None:
        raise SkillError("its front matter is not closed by a line ---")
    fields: dict[str, str] = {}
    index = 1
    while index < end:
        line = lines[index]
        index += 1
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if line[0].isspace() or line.startswith("- "):
            continue  # inside a nested mapping or list, which the skill's fields do not need
        match = _KEY.match(line)
        if match is None:
            raise SkillError(f"its front matter's line {index} is not 'key: value'")
        key, value = match.group(1), (match.group(2) or "").strip()
        block: list[str] = []
        while index < end and (not lines[index].strip() or lines[index][0].isspace()):
            block.append(lines[index])
            index += 1
        fields[key] = _scalar(value, block, index)
    return fields, "\n".join(lines[end + 1:])


def _scalar(value: str, block: list[str], line: int) -> str:
    """Return the string a YAML value and its indented continuation lines stand for."""
    if value[:1] in ("|", ">"):
        kept = [b.strip() for b in block]
        return "\n".join(kept).strip() if value[0] == "|" else " ".join(k for k in kept if k)
    if value[:1] in ("'", '"'):
        quote = value[0]
        whole = " ".join([value, *(b.strip() for b in block)]).strip()
        if len(whole) < 2 or not whole.endswith(quote):
            raise SkillError(f"its front matter has an unclosed quote before line {line}")
        inner = whole[1:-1]
        return inner.replace("''", "'") if quote == "'" else _unescape(inner)
    if value and (value[0] in "[{&*!" or value in ("~", "null")):
        return ""  # a list, a mapping or null: not a string field
    inside = next((b.strip() for b in block if b.strip()), "")
    if not value and (inside.startswith("- ") or _KEY.match(inside)):
        return ""  # a nested mapping or list
    if " #" in value:
        value = value[:value.index(" #")]
    return " ".join([value, *(b.strip() for b in block if b.strip())]).strip()


def _unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")


def index_text(skills: Iterable[Skill]) -> str | None:
    """Return the skills index (None with no skills): a header, then one line per skill, by name."""
    lines = [s.index_line() for s in sorted(skills, key=lambda s: s.name)]
    if not lines:
        return None
    return "\n".join([INDEX_HEADER, *lines])


def files_beside(skill: Skill) -> list[str]:
    """Return the files in the skill's folder besides ``SKILL.md`` (relative paths, at most
    ``MAX_LISTED_FILES``; hidden ones left out)."""
    found: list[str] = []
    try:
        for path in sorted(skill.folder.rglob("*")):
            relative = path.relative_to(skill.folder)
            if any(part.startswith(".") for part in relative.parts) or not path.is_file():
                continue
            if relative.as_posix() != FILE_NAME:
                found.append(relative.as_posix())
            if len(found) == MAX_LISTED_FILES:
                break
    except OSError:
        pass
    return found


def read_beside(skill: Skill, name: str) -> str:
    """Return the text of the file ``name`` in the skill's folder; ``CommandError`` for one outside it
    (``..``, an absolute path, a link pointing out) or that ``/file``'s rules refuse."""
    wanted = Path(name)
    if wanted.is_absolute() or ".." in wanted.parts:
        raise CommandError(f"{name} is not a file in the skill {skill.name}'s folder")
    folder = skill.folder.resolve()
    path = (folder / wanted).resolve()
    if not path.is_relative_to(folder):
        raise CommandError(f"{name} is not a file in the skill {skill.name}'s folder")
    return read_text_file(path)


def _same(one: Path, other: Path) -> bool:
    try:
        return one.resolve() == other.resolve()
    except (OSError, RuntimeError):
        return one == other


__all__ = ["Catalog", "Skill", "SkillError", "files_beside", "find", "front_matter", "index_text", "load",
           "read_beside", "roots"]
