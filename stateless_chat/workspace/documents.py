"""Documents a chat retrieves from: added with ``/add`` or ``--docs`` (files, folders, globs), split into
chunks (``chunking``), indexed (``docstore``), and before each turn searched for the new message.

``Library`` is one chat's set of documents. Adding a path indexes every text file under it
(Markdown, reStructuredText, plain text, code, HTML read as text) with ``/file``'s rules: a
binary, non-UTF-8 or over-1-MB file is refused with one line, and so is one that looks like a
secret (``.env``, a private key). A file already indexed and unchanged (same size and
modification time) is not read again; before each turn the files are looked at again (one
``stat`` each) and a changed one is indexed again, a deleted one forgotten, and a folder's new
files picked up.

``Library.retrieve`` is the session's retriever: it returns the conversation with the best
chunks for the new message in its retrieved slot, sent right before the message, within
``docs_budget`` tokens, and a ``Retrieved`` event for each. A chunk must score above a floor
(``MIN_SHARE``: its bm25 score against what a chunk holding every word of the message would
score, so a message about something the documents never mention retrieves nothing), so
unrelated messages carry no documents at all. A short message (fewer than
``CONTEXT_BELOW`` content words: "and its default?") is searched with the user's message before
it. Only the standard library and the core are used.
"""

from __future__ import annotations

import glob
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from stateless_chat.core.history import Conversation
from stateless_chat.core.messages import Event, Message, Notice, Retrieved
from stateless_chat.errors import ChatError, CommandError
from stateless_chat.sensitive import secret_reason
from stateless_chat.store.logstore import recall_terms
from stateless_chat.workspace import chunking
from stateless_chat.workspace.docstore import DocsError, DocStore, Hit, Indexed
from stateless_chat.workspace.embeddings import BATCH, Embed, VectorIndex, fuse, pack
from stateless_chat.workspace.textfiles import read_text_file

# The least share of the ideal score (see docstore.DocStore.search) a chunk needs to be retrieved,
# chosen on bench/docs.py's questions and off-topic messages (README: the figures).
MIN_SHARE = 0.5
# Of the chunks above the floor, at most this many are considered (best first), and none scoring
# under this share of the best one: a strong match does not drag weak ones in with it.
MAX_CHUNKS = 6
MIN_OF_BEST = 0.3
CONTEXT_BELOW = 2  # a message with fewer content words (but one) is searched with the one before it
# Words of chat that say nothing of a topic, left out of the search beside recall's stop words: a
# "thanks, that was helpful" or a "good morning" retrieves nothing.
FILLER = frozenset("""
    able absolutely actually afternoon again ago amazing anybody anyone anyway appreciate appreciated
    awesome bad best better bit brilliant bye cheers could definitely evening everyone everything
    example excellent explain fantastic fine first give glad good goodbye got great guess happy help helped
    helpful helping idea ideas interesting kind later like liked lot lots love lovely maybe mean might
    morning much need needed new nice night okay perfect question questions quick quite really right see
    something sorry still sure super thing things think thought today tomorrow tonight try trying use used
    using want wanted way welcome well wonderful work works would wow yeah yep yesterday
    """.split())
BATCH_CHARS = 4_000_000  # files are indexed in transactions of about this much text
MAX_EMBED_CHARS = 4_000  # of a chunk (or a message) sent to be embedded
MAX_LINES = 5  # refusals listed one line each when adding; the rest are counted
HEADER = ("Excerpts from the user's documents, retrieved for the message that follows by full-text search "
          "(some may not be relevant):")
# Folders never walked into: version control, environments, caches, build output.
SKIPPED_FOLDERS = frozenset({"node_modules", "__pycache__", "venv", "site-packages", "build", "dist",
                             "target", "_build"})
TEXT_SUFFIXES = frozenset({
    ".md", ".markdown", ".mdx", ".mkd", ".rst", ".rest", ".txt", ".text", ".html", ".htm", ".xhtml",
    ".adoc", ".asciidoc", ".org", ".tex", ".py", ".pyi", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx",
    ".java", ".kt", ".kts", ".scala", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".cs", ".go",
    ".rs", ".rb", ".php", ".swift", ".m", ".mm", ".lua", ".pl", ".pm", ".r", ".jl", ".ex", ".exs", ".erl",
    ".hs", ".ml", ".mli", ".clj", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".sql", ".css", ".scss",
    ".sass", ".less", ".vue", ".svelte", ".toml", ".ini", ".cfg", ".conf", ".yaml", ".yml", ".xml",
    ".proto", ".graphql", ".tf", ".nix", ".cmake", ".mk", ".gradle", ".dockerfile",
})
TEXT_NAMES = frozenset({"readme", "license", "makefile", "dockerfile", "changelog", "authors", "copying"})

Count = Callable[[str], int]


@dataclass
class Source:
    """A path the user added (a file, a folder or a glob) and the files it stands for now."""

    given: str  # as typed
    pattern: str  # absolute, ~ expanded
    glob: bool = False  # the pattern has wildcards
    files: set[str] = field(default_factory=set)
    folders: dict[str, int] = field(default_factory=dict)  # folder -> mtime_ns when last walked


@dataclass(frozen=True)
class Added:
    """What adding (or refreshing) did: files indexed anew, files already indexed, refusals, time."""

    indexed: int = 0
    kept: int = 0
    chunks: int = 0
    chars: int = 0
    refused: tuple[str, ...] = ()
    gone: tuple[str, ...] = ()
    seconds: float = 0.0
    embedded: int = 0  # chunks given a vector (with an embedding model)


def _is_text_name(path: Path) -> bool:
    return path.suffix.lower() in TEXT_SUFFIXES or path.name.lower() in TEXT_NAMES


def _hidden(name: str) -> bool:
    return name.startswith(".")


class Library:
    """One chat's documents: the sources added, their files in the index, and the last retrieval.

    ``store`` is the index (``DocStore``); ``count`` measures a chunk as the session counts tokens;
    ``shown`` is how a file's path is shown (in the request and to the user).
    """

    def __init__(self, store: DocStore, count: Count,
                 shown: Callable[[str], str] = lambda path: path) -> None:
        self.store = store
        self.count = count
        self.shown = shown
        self.sources: list[Source] = []
        self._ids: dict[str, int] = {}  # path -> file id, for the files of the sources
        self._stamps: dict[str, tuple[int, int]] = {}  # path -> (size, mtime_ns) as indexed
        self._sizes: dict[int, int] = {}  # chunk id -> tokens, counted once
        self.last: tuple[tuple[Hit, int], ...] = ()  # what the last retrieval chose, with its sizes
        # With an embedding model (``use_embeddings``): chunks get vectors and searches a second ranking.
        self.embed: Embed | None = None
        self.model = ""
        self.embedding_error: str | None = None  # the failure that stopped embedding, until told again
        self.similar: dict[int, float] = {}  # the last search's similarities, by chunk id
        self.last_similar: dict[int, float] = {}  # those of the chunks the last retrieval chose
        self.notes: list[str] = []  # what the last search has to say (an embedding that failed)
        self._vectors: tuple[frozenset[int], VectorIndex] | None = None

    def use_embeddings(self, embed: Embed, model: str) -> None:
        """Search by meaning too: ``embed`` turns texts into vectors of ``model`` (the endpoint's)."""
        self.embed, self.model, self.embedding_error = embed, model, None
        self._vectors = None

    # ---- adding -----------------------------------------------------------------------------

    @property
    def files(self) -> set[str]:
        return set().union(*(s.files for s in self.sources)) if self.sources else set()

    def add(self, given: Sequence[str]) -> Added:
        """Add the paths ``given`` (files, folders, globs; ``~`` expanded) and index what is new or
        changed; a path that matches nothing is one refusal."""
        started = time.perf_counter()
        fresh: list[Source] = []
        refused: list[str] = []
        for text in given:
            pattern = os.path.abspath(os.path.expanduser(text))
            if not glob.has_magic(pattern) and not os.path.exists(pattern):
                refused.append(f"no such file or folder: {text}")
                continue
            fresh.append(Source(text, pattern, glob.has_magic(pattern)))
        for source in fresh:
            self._walk(source, refused)
            if not source.files and source.glob:
                refused.append(f"{source.given}: no file matches it")
            elif not source.files and os.path.isdir(source.pattern):
                refused.append(f"{source.given}: no text file in it")
        for source in fresh:
            self.sources = [s for s in self.sources if s.pattern != source.pattern] + [source]
        done = self._index(self.files, refused)
        self.embedding_error = None  # adding is asking again
        embedded = self.embed_missing()
        return Added(done.indexed, done.kept, done.chunks, done.chars, done.refused, done.gone,
                     time.perf_counter() - started, embedded)

    def _walk(self, source: Source, refused: list[str]) -> None:
        """Find the files ``source`` stands for now: a file itself; under a folder every text file but
        hidden ones and those in skipped folders; the files a glob matches."""
        found: set[str] = set()
        folders: dict[str, int] = {}
        paths = glob.glob(source.pattern, recursive=True) if source.glob else [source.pattern]
        for path in sorted(paths):
            if os.path.isdir(path):
                for folder, names, files in os.walk(path):
                    names[:] = sorted(n for n in names if not _hidden(n) and n not in SKIPPED_FOLDERS)
                    try:
                        folders[folder] = os.stat(folder).st_mtime_ns
                    except OSError:
                        continue
                    for name in sorted(files):
                        if not _hidden(name) and _is_text_name(Path(name)):
                            found.add(os.path.join(folder, name))
            elif os.path.isfile(path):
                found.add(path)
            elif os.path.exists(path):
                refused.append(f"{path}: not a regular file")
        source.files, source.folders = found, folders

    def _index(self, paths: Iterable[str], refused: list[str]) -> Added:
        """Index the files at ``paths`` that are new or changed since they were indexed; forget those
        that are gone; return what was done."""
        wanted = sorted(paths)
        known = self.store.files(wanted)
        indexed = kept = chunks = chars = 0
        gone: list[str] = []
        batch: list[Indexed] = []

        def flush() -> None:
            self._vectors = None
            ids = self.store.put(batch)
            self._ids.update(ids)
            self._stamps.update((item.path, (item.size, item.mtime_ns)) for item in batch)
            batch.clear()

        for path in wanted:
            try:
                info = os.stat(path)
            except OSError:
                gone.append(path)
                continue
            row = known.get(path)
            stamp = (info.st_size, info.st_mtime_ns)
            if row is not None and (row.size, row.mtime_ns) == stamp:
                self._ids[path], self._stamps[path] = row.id, stamp
                kept += 1
                continue
            try:
                text = read_text_file(Path(path))
                reason = secret_reason(Path(path), text)
                if reason is not None:
                    raise CommandError(f"{path} looks like a secret ({reason}); not added")
            except CommandError as error:
                refused.append(str(error))
                self._drop(path)
                continue
            except OSError as error:
                refused.append(f"{path}: {error.strerror or error}")
                self._drop(path)
                continue
            pieces = chunking.chunk(text, chunking.kind_of(Path(path)))
            batch.append(Indexed(path, info.st_size, info.st_mtime_ns, pieces, len(text)))
            indexed += 1
            chunks += len(pieces)
            chars += len(text)
            if sum(item.chars for item in batch) >= BATCH_CHARS:
                flush()
        if batch:
            flush()
        for path in gone:
            self._drop(path)
        if gone:
            self.store.forget(gone)
        return Added(indexed, kept, chunks, chars, tuple(refused), tuple(gone))

    def _drop(self, path: str) -> None:
        self._vectors = None
        self._ids.pop(path, None)
        self._stamps.pop(path, None)
        for source in self.sources:
            source.files.discard(path)

    def refresh(self) -> Added:
        """Look at the sources again (one stat a file and a folder): index what changed, pick up a
        folder's new files, forget what is gone; return what was done."""
        refused: list[str] = []
        for source in self.sources:
            changed = source.glob
            for folder, mtime in source.folders.items():
                try:
                    changed = changed or os.stat(folder).st_mtime_ns != mtime
                except OSError:
                    changed = True
            if changed:
                self._walk(source, refused)
        files = self.files
        stale = [p for p in files if self._stale(p)]
        missing = [p for p in files if p not in self._ids]
        vanished = sorted(set(self._ids) - files)  # no longer under a source: deleted, or renamed
        for path in vanished:
            self._drop(path)
        gone = [path for path in vanished if not os.path.exists(path)]
        if gone:
            self.store.forget(gone)
        if not stale and not missing and not refused:
            return Added(kept=len(files), gone=tuple(gone), embedded=self.embed_missing() if vanished else 0)
        done = self._index(set(stale) | set(missing), refused)
        return Added(done.indexed, done.kept, done.chunks, done.chars, done.refused, done.gone + tuple(gone),
                     embedded=self.embed_missing())

    def embed_missing(self) -> int:
        """Give each chunk of this chat's files that has none a vector from the embedding model, in
        batches; return how many were given one. A failure stops it (``embedding_error``) until the
        next ``add``: the search goes on by words alone."""
        if self.embed is None or self.embedding_error is not None:
            return 0
        ids = set(self._ids.values())
        done = 0
        while True:
            batch = self.store.unembedded(self.model, ids, BATCH)
            if not batch:
                return done
            try:
                vectors = self.embed([text[:MAX_EMBED_CHARS] for _, text in batch])
            except ChatError as error:
                self.embedding_error = str(error)
                self.notes.append(f"documents: embedding failed ({error}); searching by words alone")
                return done
            self.store.put_vectors(self.model, [(chunk, pack(v)) for (chunk, _), v in zip(batch, vectors,
                                                                                          strict=True)])
            self._vectors = None
            done += len(batch)

    def _stale(self, path: str) -> bool:
        """Return whether the file at ``path`` changed (or went) since it was indexed."""
        try:
            info = os.stat(path)
        except OSError:
            return True
        return self._stamps.get(path) != (info.st_size, info.st_mtime_ns)

    def remove(self, given: str) -> list[str]:
        """Stop retrieving from the source ``given`` (as added, or its path), or from one file of a
        source; return the paths it stood for. CommandError when nothing added matches it."""
        pattern = os.path.abspath(os.path.expanduser(given))
        source = next((s for s in self.sources if given in (s.given, s.pattern) or s.pattern == pattern),
                      None)
        if source is not None:
            self.sources.remove(source)
            gone = sorted(source.files - self.files)
        else:
            holding = [s for s in self.sources if pattern in s.files]
            if not holding:
                raise CommandError(f"{given} is not among the documents (/docs lists them)")
            for s in holding:
                s.files.discard(pattern)
            gone = [pattern]
        for path in gone:
            self._ids.pop(path, None)
            self._stamps.pop(path, None)
        return gone

    def listing(self) -> list[str]:
        """Return one line per source: what was added, its files, chunks and size."""
        rows = self.store.files(self.files)
        lines = []
        for source in self.sources:
            mine = [rows[path] for path in sorted(source.files) if path in rows]
            chars = sum(r.chars for r in mine)
            lines.append(f"{source.given} · {len(mine)} file(s) · {sum(r.chunks for r in mine):,} chunks · "
                         f"{chars / 1e6:.2f} MB (~{chars // 4:,} tokens)")
        return lines

    # ---- retrieving -----------------------------------------------------------------------------

    def search(self, terms: Sequence[str], text: str = "") -> list[Hit]:
        """Return the chunks of this chat's documents that clear the floor for ``terms``, best first
        (at most ``MAX_CHUNKS``); with an embedding model, fused by rank with those most similar to
        ``text`` (``embeddings``)."""
        ids = set(self._ids.values())
        self.similar = {}
        if not ids:
            return []
        hits = [h for h in self.store.search(terms, among=ids, limit=MAX_CHUNKS) if h.share >= MIN_SHARE]
        if hits:
            best = hits[0].score
            hits = [h for h in hits if h.score >= MIN_OF_BEST * best]
        if self.embed is None or not text.strip():
            return hits
        index = self._vector_index(ids)
        if not len(index):
            return hits
        try:
            query = self.embed([text[:MAX_EMBED_CHARS]])[0]
        except ChatError as error:
            self.notes.append(f"documents: the message could not be embedded ({error}); searched by words "
                              "alone")
            return hits
        ranking = index.rank(query, MAX_CHUNKS * 4)
        allowed = {h.id for h in hits} | {chunk for chunk, similarity in ranking.order
                                          if ranking.stands_out(similarity)}
        scores = fuse([h.id for h in hits], [chunk for chunk, _ in ranking.order])
        order = sorted(allowed, key=lambda chunk: -scores.get(chunk, 0.0))[:MAX_CHUNKS]
        by_id = {h.id: h for h in hits}
        by_id.update(self.store.hits([chunk for chunk in order if chunk not in by_id]))
        self.similar = dict(ranking.order)
        return [by_id[chunk] for chunk in order if chunk in by_id]

    def _vector_index(self, ids: set[int]) -> VectorIndex:
        key = frozenset(ids)
        if self._vectors is None or self._vectors[0] != key:
            self._vectors = (key, VectorIndex(self.store.vectors(self.model, ids)))
        return self._vectors[1]

    def source(self, hit: Hit) -> str:
        """Return where a chunk is, as it is shown: ``path:first-last``."""
        lines = f"{hit.start}-{hit.end}" if hit.end != hit.start else f"{hit.start}"
        return f"{self.shown(hit.path)}:{lines}"

    def excerpt(self, hit: Hit) -> str:
        """Return a chunk as the retrieved message shows it: where it is and its headings, then its text."""
        heading = f" ({hit.heading})" if hit.heading else ""
        return f"--- {self.source(hit)}{heading}\n{hit.body}"

    def size_of(self, hit: Hit) -> int:
        known = self._sizes.get(hit.id)
        if known is None:
            known = self._sizes[hit.id] = self.count(self.excerpt(hit))
        return known

    def choose(self, text: str, conversation: Conversation, room: int) -> list[tuple[Hit, int]]:
        """Return the chunks to send with ``text`` (and their sizes), best first, within ``room`` tokens;
        chunks already in the live history (the same text) are left out."""
        terms = topic_terms(text)
        if not terms:
            return []
        query = text
        if len(terms) < CONTEXT_BELOW:
            before = next((e.content for e in reversed(conversation.history)
                           if e.role == "user" and e.kind == "turn"), "")
            terms = list(dict.fromkeys(topic_terms(before) + terms))
            query = f"{before}\n{text}"
        sent = "\n".join(e.content for e in conversation.live)
        chosen: list[tuple[Hit, int]] = []
        for hit in self.search(terms, query):
            size = self.size_of(hit)
            if size <= room and hit.body not in sent:
                chosen.append((hit, size))
                room -= size
        return chosen

    def retrieve(self, text: str, conversation: Conversation, budget: int, *, room: int,
                 measure: Callable[[Message], int]) -> tuple[Conversation, list[Event]]:
        """Return ``conversation`` with the chunks chosen for ``text`` in its retrieved slot (one
        message), and the events: files indexed again, and one ``Retrieved`` a chunk."""
        events: list[Event] = []
        try:
            done = self.refresh()
            events += [Notice(line) for line in refresh_lines(done)]
            chosen = self.choose(text, conversation, room)
        except DocsError as error:
            return conversation, [Notice(f"documents: {error}; nothing retrieved")]
        finally:
            notes, self.notes = self.notes, []
            events += [Notice(note) for note in notes]
        self.last = tuple(chosen)
        self.last_similar = {hit.id: self.similar[hit.id] for hit, _ in chosen if hit.id in self.similar}
        if not chosen:
            return conversation.with_retrieved((), measure), events
        body = "\n\n".join([HEADER, *(self.excerpt(hit) for hit, _ in chosen)])
        sources = ", ".join(self.source(hit) for hit, _ in chosen)
        events += [Retrieved(self.source(hit), size, hit.heading) for hit, size in chosen]
        return conversation.with_retrieved([(sources, body)], measure), events


def topic_terms(text: str) -> list[str]:
    """Return the words of ``text`` searched for: lower case, each once, without stop words and chat
    filler."""
    return [term for term in recall_terms(text) if term not in FILLER]


def refresh_lines(done: Added) -> list[str]:
    """Return what a refresh before a turn says: files indexed again, forgotten or refused."""
    lines = []
    if done.indexed:
        lines.append(f"documents: indexed {done.indexed} new or changed file(s) again")
    if done.embedded:
        lines.append(f"documents: embedded {done.embedded:,} chunk(s)")
    lines += [f"documents: {path} is gone; it is no longer searched" for path in done.gone[:MAX_LINES]]
    lines += [f"documents: {line}" for line in done.refused[:MAX_LINES]]
    return lines


def added_lines(done: Added, what: str) -> list[str]:
    """Return what adding said: the refusals (one line each, the rest counted) and a summary line."""
    lines = list(done.refused[:MAX_LINES])
    if len(done.refused) > MAX_LINES:
        lines.append(f"... and {len(done.refused) - MAX_LINES} more refused")
    files = done.indexed + done.kept
    again = f", {done.kept} already indexed" if done.kept else ""
    embedded = f", {done.embedded:,} chunks embedded" if done.embedded else ""
    lines.append(f"documents: {what}: {files} file(s) ({done.indexed} indexed, {done.chunks:,} chunks, "
                 f"{done.chars / 1e6:.1f} MB{again}{embedded}) in {done.seconds:.1f} s")
    return lines


def open_store(path: Path | None, say: Callable[[str], None]) -> DocStore:
    """Return the documents' index at ``path``; one in memory (with one line) when it cannot be used."""
    if path is not None:
        try:
            return DocStore.open(path)
        except DocsError as error:
            say(f"{error}; the documents are indexed in memory for this chat")
    return DocStore.memory()


__all__ = ["Added", "Library", "added_lines", "open_store", "refresh_lines", "topic_terms"]
