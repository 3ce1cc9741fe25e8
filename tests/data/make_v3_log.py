"""Make ``v3log.sql``: the rows of a conversation log written by stateless-chat's log schema version
3 (commit d53c3ea, before the log stored each message once), for the migration tests
(``tests/test_logstore.py: load_v3`` makes the file from them).

Run it with that version's code first on the path, from a checkout of it:
``PYTHONPATH=OLD python tests/data/make_v3_log.py OUT.sql``. Real chats through the fake server:
evictions, a pin, summaries, a tool loop (several requests in one turn), recall, a conversation
only indexed (loaded from a file, never a turn), unicode, and a message with half a surrogate pair.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import sys
import tempfile
from pathlib import Path

from stateless_chat.logstore import LogStore

from stateless_chat import journal
from tests.conftest import make_session
from tests.fakeserver import FakeServer


def main(out: Path) -> None:
    directory = Path(tempfile.mkdtemp())
    path = directory / "logs.db"
    with FakeServer() as server:
        session = make_session(server, system="Be brief. ✓ ünïcödé", budget=700, reply_reserve=100)
        log = journal.attach(session, path)
        for n in range(1, 12):
            session.send(f"Turn {n}: rivers, mountains and valleys, café ☕ " + "forests meadows " * 10)
            if n == 3:
                session.pin(session.conversation.history[-2].id)
        log.close()

        folded = make_session(server, policy="summarize", budget=600, reply_reserve=80)
        log = journal.attach(folded, path)
        for n in range(1, 10):
            folded.send(f"Fact {n}: the code word {n} is heron-{n}. " + "filler words here " * 8)
        log.close()

        recalled = make_session(server, budget=600, reply_reserve=80, recall="auto")
        log = journal.attach(recalled, path)
        recalled.send("Please remember: the launch code is 7491.")
        for n in range(2, 12):
            recalled.send(f"weather talk {n} " + "clouds rain sun " * 10)
        recalled.send("What was the launch code?")
        log.close()

    with LogStore.open(path) as store:  # a tool loop (several requests in one turn), and odd text
        cid = store.start_conversation(model="m", endpoint="http://127.0.0.1:9/v1")
        from tests.logstore_worker import make_turn, message

        record = make_turn(2, "tools")
        call = [{"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2}'}}]
        steps = ({"model": "m", "messages": [{"role": "user", "content": "add"}],
                  "tools": [{"type": "function"}]},
                 {"model": "m", "messages": [{"role": "user", "content": "add"},
                                             {"role": "assistant", "content": None, "tool_calls": call},
                                             {"role": "tool", "content": "4", "tool_call_id": "c1"}]})
        store.log_turn(cid, dataclasses.replace(record, earlier=steps))
        odd = make_turn(3, "odd \ud800 half")
        store.log_turn(cid, dataclasses.replace(odd, messages=(*odd.messages, message(
            99, 3, "user", "lone \udc00 surrogate"))))
        loaded = store.start_conversation(model="m", endpoint="e")
        store.index(loaded, [message(1, 1, "user", "loaded from a file, never a turn")])

    db = sqlite3.connect(path)  # the rows of the three tables; the loader makes the schema and the index
    tables = ('INSERT INTO "conversations"', 'INSERT INTO "turns"', 'INSERT INTO "messages"')
    lines = [line for line in db.iterdump() if line.startswith(tables)]
    out.write_text("\n".join(lines) + "\n", encoding="utf-8", errors="surrogatepass")
    db.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
