"""Memory: peak RSS of a process holding a 10,000-message conversation.

A fresh child process imports what the REPL imports (the session, openai, rich,
prompt_toolkit), notes its RSS, builds the conversation, plans one request over all
of it (the payload the next turn would send) and reports its peak RSS. With exact
counts the tiktoken encoding is loaded too, as in the REPL; a one-shot run sizes
messages by their byte bound and loads none.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass

from bench.common import ROOT, clean_env

CHILD = """\
import json, sys
sys.path.insert(0, sys.argv[2])
import openai, rich.console, prompt_toolkit
from stateless_chat.chat.session import Session
from bench.turns import history_session

def rss_kib(field="VmRSS:"):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field):
                return int(line.split()[1])
    return 0

before = rss_kib()
session = history_session(int(sys.argv[1]), exact=sys.argv[3] == "exact")
plan = session.plan("one more question", summarize=False)
body = session.body_of(plan.request)
assert len(body["messages"]) == int(sys.argv[1]) + 1
peak = rss_kib("VmHWM:")  # this process's high-water mark (ru_maxrss can carry the parent's across exec)
chars = sum(len(e.content) for e in session.conversation.history)
print(json.dumps({"before_kib": before, "peak_kib": peak, "after_kib": rss_kib(), "chars": chars}))
"""


@dataclass
class MemoryResult:
    """Peak RSS (KiB) of the holding process, its RSS before building, and the text held."""

    messages: int
    exact: bool
    before_kib: int
    peak_kib: int
    after_kib: int
    chars: int


def run(messages: int = 10_000, exact: bool = True) -> MemoryResult:
    """Return the memory of a fresh process that holds ``messages`` messages, counted exactly
    (the encoding loaded, as in the REPL) or by their byte bound (as a one-shot run)."""
    how = "exact" if exact else "bound"
    done = subprocess.run([sys.executable, "-c", CHILD, str(messages), str(ROOT), how], env=clean_env(),
                          capture_output=True, timeout=300, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"memory child failed: {done.stderr.decode('utf-8', 'replace')[-800:]}")
    data = json.loads(done.stdout)
    return MemoryResult(messages, exact, data["before_kib"], data["peak_kib"], data["after_kib"],
                        data["chars"])
