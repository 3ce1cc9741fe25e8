"""Documents retrieved into the request: chunked along their structure, indexed in a real SQLite file (FTS5,
bm25), searched before each turn, sent in their own slot right before the new message within docs_budget,
each chunk one event line; nothing for a message they do not answer. Through the REPL (pipe input) against
the fake server, one-shot with --docs, and in the conversation log."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.chat.session import Session
from stateless_chat.store.logstore import LogStore
from stateless_chat.workspace import attach as workspace
from stateless_chat.workspace import chunking
from stateless_chat.workspace.attach import Workspace
from stateless_chat.workspace.documents import MAX_CHUNKS, Library, added_lines, open_store, topic_terms
from tests.fakeserver import FakeServer
from tests.support import attach_journal, make_session, observer, run_cli, run_repl

GARDEN = """\
Garden Handbook
===============

This handbook covers the allotment at Hollow Lane.

Watering
--------

Water the tomatoes every morning in July. The rain barrel by the shed
holds 200 litres; refill it from the standpipe on Sundays.

Compost
-------

The compost heap sits behind the greenhouse. Turn it every second week
with the green fork, and keep citrus peel out of it.

::

    heap.turn(fork="green")
    heap.check(temperature=60)

Tools
-----

The shed key hangs on the hook inside the blue gate. Return the wheelbarrow
to the shed before dusk.
"""

BEES = """\
# Beekeeping notes

## Hive inspections

Open the hive only on warm afternoons above 15 degrees. Wear the veil and
light the smoker with hessian.

## Honey harvest

Harvest the supers in late August; leave at least 18 kg of honey for winter.

```python
def frames_to_extract(supers):
    return [f for s in supers for f in s.frames if f.capped > 0.8]
```
"""


def corpus(root: Path) -> Path:
    folder = root / "notes"
    (folder / "deeper").mkdir(parents=True)
    (folder / "garden.rst").write_text(GARDEN, encoding="utf-8")
    (folder / "deeper" / "bees.md").write_text(BEES, encoding="utf-8")
    return folder


def attached(server: FakeServer, lines: list[str] | None = None, **settings: Any) -> Session:
    session = make_session(server, **settings)
    workspace.attach(session, cwd=None, env=os.environ, say=(lines.append if lines is not None else print))
    return session


def docs_message(body: dict[str, Any]) -> str | None:
    """Return the retrieved documents' message of a request (right before the last one), if any."""
    messages = body["messages"]
    if len(messages) >= 2 and messages[-2]["content"].startswith("Excerpts from the user's documents"):
        assert messages[-2]["role"] == "user"
        return str(messages[-2]["content"])
    return None


# ---- chunking ---------------------------------------------------------------------------------


def test_rst_is_split_at_its_headings_with_the_heading_path_and_the_lines() -> None:
    chunks = chunking.chunk(GARDEN, "rst")
    # small sections join the chunk before them until it has MIN_CHARS; Tools starts a chunk of its own
    assert [c.heading for c in chunks] == ["Garden Handbook", "Garden Handbook > Tools"]
    lines = GARDEN.splitlines()
    for chunk in chunks:  # each chunk's text is its lines of the file, as they are
        assert chunk.text.splitlines()[0] == lines[chunk.start - 1]
        assert chunk.text.splitlines()[-1] == lines[chunk.end - 1]
    # the literal block stays with the paragraph that introduces it
    assert "Compost\n-------" in chunks[0].text and chunks[0].text.endswith("heap.check(temperature=60)")
    assert (chunks[1].start, chunks[1].end) == (23, 27) and "The shed key" in chunks[1].text


def test_a_heading_starts_a_chunk_once_the_one_before_is_big_enough() -> None:
    text = "\n\n".join(f"Part {k}\n------\n\n" + ("words " * 80) for k in range(4))
    chunks = chunking.chunk("Top\n===\n\n" + text, "rst")
    assert [c.heading for c in chunks] == ["Top", "Top > Part 1", "Top > Part 2", "Top > Part 3"]
    assert chunks[0].text.startswith("Top\n===") and "Part 0" in chunks[0].text


def test_markdown_keeps_fenced_code_whole_and_splits_a_long_block_between_lines() -> None:
    chunks = chunking.chunk(BEES, "markdown")
    assert any("def frames_to_extract" in c.text and c.text.rstrip().endswith("```") for c in chunks)
    assert chunks[0].heading == "Beekeeping notes"
    long = "# Log\n\n" + "\n".join(f"line {k} " + "x" * 60 for k in range(200))
    pieces = chunking.chunk(long, "markdown")
    assert len(pieces) > 5 and all(len(p.text) <= chunking.TARGET_CHARS + 100 for p in pieces)
    assert all(p.heading == "Log" for p in pieces)
    assert [p.start for p in pieces] == sorted(p.start for p in pieces) and pieces[-1].end == 202


def test_html_is_read_as_text_with_its_headings_and_source_lines() -> None:
    html = ("<html><head><title>t</title><style>body{}</style></head>\n<body>\n<h1>Guide</h1>\n"
            "<p>First paragraph\nof the guide.</p>\n<script>alert('no')</script>\n<h2>Setup</h2>\n"
            "<pre>pip install thing\nthing --init</pre>\n<p>Done &amp; dusted.</p>\n</body></html>\n")
    lines, sources = chunking.html_lines(html)
    text = "\n".join(lines)
    assert "# Guide" in text and "## Setup" in text and "Done & dusted." in text
    assert "alert" not in text and "body{}" not in text and "pip install thing\nthing --init" in text
    chunks = chunking.chunk(html, "html")
    assert chunks[0].heading.startswith("Guide") and chunks[0].start == 3  # the <h1>'s line in the file


# ---- the index ----------------------------------------------------------------------------------


def library(tmp_path: Path) -> Library:
    return Library(open_store(tmp_path / "docs.db", print), lambda text: len(text) // 4 + 3)


def test_adding_a_folder_indexes_its_text_files_and_refuses_the_rest_one_line_each(tmp_path: Path) -> None:
    folder = corpus(tmp_path)
    (folder / "photo.png").write_bytes(b"\x89PNG\x00\x00")  # not a text name: never read
    (folder / "data.txt").write_bytes(b"\x00binary")
    (folder / ".env").write_text("KEY=1\n")  # hidden: not walked
    (folder / "keys.txt").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n")
    (folder / "big.md").write_text("x" * 1_000_001)
    (folder / ".git").mkdir()
    (folder / ".git" / "HEAD.md").write_text("ref")
    docs = library(tmp_path)
    done = docs.add([str(folder), str(tmp_path / "missing")])
    assert (done.indexed, done.kept) == (2, 0)
    refused = sorted(done.refused)
    assert len(refused) == 4
    assert "binary" in refused[0] or any("binary" in r for r in refused)
    assert any("looks like a secret" in r for r in refused) and any("1,000,000 bytes" in r for r in refused)
    assert any("no such file or folder" in r for r in refused)
    lines = added_lines(done, str(folder))
    assert lines[-1].startswith(f"documents: {folder}: 2 file(s) (2 indexed, ")
    again = library(tmp_path).add([str(folder)])  # another chat, the same index: nothing read again
    assert (again.indexed, again.kept) == (0, 2)
    assert oct((tmp_path / "docs.db").stat().st_mode & 0o777) == "0o600"


def test_a_changed_file_is_indexed_again_a_new_one_picked_up_a_deleted_one_forgotten(tmp_path: Path) -> None:
    folder = corpus(tmp_path)
    docs = library(tmp_path)
    docs.add([str(folder)])
    assert docs.search(topic_terms("When do I harvest the honey supers?"))[0].path.endswith("bees.md")
    time.sleep(0.01)
    (folder / "garden.rst").write_text(GARDEN.replace("blue gate", "red gate"), encoding="utf-8")
    (folder / "orchard.md").write_text("# Orchard\n\nPrune the apple trees in February.\n", encoding="utf-8")
    (folder / "deeper" / "bees.md").unlink()
    os.utime(folder, None)
    done = docs.refresh()
    assert done.indexed == 2 and len(done.gone) == 1
    assert docs.search(topic_terms("When do I harvest the honey supers?")) == []
    assert "red gate" in docs.search(topic_terms("Where is the shed key?"))[0].body
    assert docs.search(topic_terms("When should I prune apple trees?"))[0].path.endswith("orchard.md")
    assert docs.refresh().indexed == 0  # nothing changed since: nothing read


def test_globs_and_docs_rm(tmp_path: Path) -> None:
    folder = corpus(tmp_path)
    docs = library(tmp_path)
    done = docs.add([str(folder / "**" / "*.md")])
    assert done.indexed == 1 and docs.files == {str(folder / "deeper" / "bees.md")}
    assert docs.remove(str(folder / "**" / "*.md")) == [str(folder / "deeper" / "bees.md")]
    assert docs.search(topic_terms("honey harvest")) == []


def test_a_documents_index_that_cannot_be_opened_is_one_line_and_memory_serves(tmp_path: Path) -> None:
    (tmp_path / "docs.db").mkdir()
    said: list[str] = []
    store = open_store(tmp_path / "docs.db", said.append)
    assert len(said) == 1 and "cannot open the documents' index" in said[0] and "memory" in said[0]
    docs = Library(store, lambda text: len(text) // 4)
    docs.add([str(corpus(tmp_path))])
    assert docs.search(topic_terms("shed key"))


# ---- in the chat --------------------------------------------------------------------------------


def test_the_best_chunks_go_right_before_the_message_each_one_event_line(server: FakeServer,
                                                                         tmp_path: Path) -> None:
    folder = corpus(tmp_path)
    session = attached(server, system="Be brief.")
    run = run_repl(session, [f"/add {folder}\r", "Where does the shed key hang?\r", "/sources\r",
                             "Tell me about the history of the Roman empire\r", "/sources\r", "/docs\r"],
                   width=300)
    first, second = server.requests
    text = docs_message(first)
    assert text is not None and "The shed key hangs on the hook inside the blue gate." in text
    assert f"--- {folder / 'garden.rst'}:23-27 (Garden Handbook > Tools)" in text
    assert first["messages"][-1] == {"role": "user", "content": "Where does the shed key hang?"}
    assert docs_message(second) is None  # nothing scores above the floor: nothing sent
    # the documents were for that message only: the next request has the history without them
    assert [m["content"] for m in second["messages"][1:4]] == [
        "Where does the shed key hang?", "echo: Where does the shed key hang?",
        "Tell me about the history of the Roman empire"]
    assert "· retrieved " in run.output and "garden.rst:23-27 (" in run.output
    assert " tokens) · Garden Handbook > Tools" in run.output
    assert "the last request carried 1 chunk(s)" in run.output
    assert "the last request carried no documents" in run.output
    assert "2 file(s) (2 indexed" in run.output and "notes · 2 file(s) · " in run.output
    # documents sent with one message only break nothing: no cache-break line, none counted
    assert "cache break" not in run.output and all(t.cache_break is None for t in session.ledger.turns)
    assert session.conversation.retrieved == ()
    # /tokens TEXT counts what that message would retrieve; /raw TEXT shows it
    question = "Where does the shed key hang?"
    run = run_repl(session, [f"/tokens {question}\r", f"/raw {question}\r"], width=2000)
    assert "│ documents " in run.output and "│ this message " in run.output
    assert "The shed key hangs on the hook" in run.output.split("next request")[-1]


def test_documents_stay_within_docs_budget(server: FakeServer, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for k in range(12):  # many chunks answer, each ~150 tokens; other notes make the kiln's words rare
        text = f"Load {k}: the kiln fires stoneware at {1200 + k} degrees of temperature. " * 12
        (folder / f"kiln{k}.md").write_text(f"# Kiln firing {k}\n\n{text}", encoding="utf-8")
    for k in range(30):
        (folder / f"other{k}.md").write_text(f"# Note {k}\n\nThe choir rehearses on day {k} at the hall.\n")
    session = attached(server, docs_budget=600)
    run_repl(session, [f"/add {folder}\r", "At what temperature does the kiln fire stoneware?\r"])
    space = observer(session, Workspace)
    assert space is not None and 0 < len(space.sent) < MAX_CHUNKS  # the budget, not the count, stopped it
    assert sum(size for _, size in space.sent) <= 600
    text = docs_message(server.requests[0])
    assert text is not None and text.count("--- ") == len(space.sent)


def test_a_short_follow_up_is_searched_with_the_message_before_it(server: FakeServer, tmp_path: Path) -> None:
    session = attached(server)
    run_repl(session, [f"/add {corpus(tmp_path)}\r", "How often do I turn the compost heap?\r",
                       "and its temperature?\r", "thanks, great!\r"])
    assert "heap.check(temperature=60)" in (docs_message(server.requests[1]) or "")
    assert docs_message(server.requests[2]) is None  # only chat filler: no search at all


def test_one_shot_docs_are_indexed_retrieved_logged_and_shown_with_v(server: FakeServer,
                                                                      tmp_path: Path) -> None:
    folder = corpus(tmp_path)
    done = run_cli("--base-url", server.url, "--docs", str(folder), "-v", "When do I harvest honey?")
    assert done.returncode == 0, done.stderr
    text = docs_message(server.requests[0])
    assert text is not None and "leave at least 18 kg of honey" in text
    err = done.stderr.decode()
    assert "documents: " in err and "· retrieved" not in err and "retrieved " in err and "bees.md:" in err
    quiet = run_cli("--base-url", server.url, "--docs", str(folder), "When do I harvest honey?")
    assert quiet.returncode == 0 and quiet.stderr == b""
    dry = run_cli("--base-url", server.url, "--docs", str(folder), "--dry-run", "When do I harvest honey?")
    assert b"leave at least 18 kg of honey" in dry.stdout
    # the log has the request as sent and one event line per chunk
    log = Path(os.environ["XDG_DATA_HOME"]) / "stateless-chat" / "logs.db"
    with LogStore.open(log) as store:
        cid = store.latest()
        assert cid is not None
        turn = store.turns(cid)[-1]
        sent = store.bodies(cid, turn.turn)[-1]
    assert any(event.startswith("retrieved ") and "bees.md:" in event for event in turn.events)
    assert "leave at least 18 kg of honey" in json.dumps(json.loads(sent))


def test_docs_in_the_config_file_are_added_in_every_chat(server: FakeServer, tmp_path: Path) -> None:
    folder = corpus(tmp_path)
    lines: list[str] = []
    session = attached(server, lines, docs=(str(folder), str(tmp_path / "nowhere")))
    assert lines == [f"no such file or folder: {tmp_path / 'nowhere'}"]
    space = observer(session, Workspace)
    assert space is not None and space.started()[-1].startswith("documents: ")
    run_repl(session, ["Where does the shed key hang?\r"])
    assert docs_message(server.requests[0]) is not None


def test_the_journal_logs_the_retrieval_events(server: FakeServer, tmp_path: Path) -> None:
    session = attached(server)
    log = attach_journal(session, tmp_path / "log.db")
    run_repl(session, [f"/add {corpus(tmp_path)}\r", "Where does the shed key hang?\r"])
    assert log.store is not None and log.cid is not None
    events = log.store.turns(log.cid)[0].events
    assert any(e.startswith("retrieved ") and "garden.rst:" in e for e in events)


@pytest.mark.parametrize("typed", ["/add\r", "/docs rm\r", "/docs rm nothing-added\r", "/docs what\r"])
def test_bad_arguments_are_one_line(server: FakeServer, typed: str) -> None:
    session = attached(server)
    run = run_repl(session, [typed])
    assert run.output.count("error:") == 1
