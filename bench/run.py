"""Run every benchmark and write the results tables into docs/benchmarks.md.

    python bench/run.py              # the whole suite (a few minutes), docs/benchmarks.md updated
    python bench/run.py --no-write   # print the tables only
    python bench/run.py --quick      # tiny sizes: checks the suite works, numbers mean nothing
    python bench/run.py --only gateway  # run some parts; the page keeps the others' tables

One-shot latency starts the project's fake server (tests/fakeserver.py) on loopback
and times three contenders against it; ``llm`` is installed from PyPI into
bench/.venv-llm on first use (``--no-llm`` leaves it out). The gateway part needs the
``gateway`` and ``local`` extras (the LiteLLM proxy, llama.cpp and the bundled model); without
them it is skipped with a note (``--no-gateway`` leaves it out).
"""

from __future__ import annotations

import argparse
import datetime
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import (  # noqa: E402
    counts,
    docs,
    economy,
    gateway,
    local_latency,
    log,
    memory,
    oneshot,
    recall,
    standing,
    stream,
    tools,
    turns,
)
from bench.common import ROOT, machine, ms  # noqa: E402

# The page the results tables live in, between the markers below.
RESULTS = ROOT / "docs" / "benchmarks.md"
BEGIN = "<!-- bench:results:begin (written by python bench/run.py) -->"
END = "<!-- bench:results:end -->"
PLACEHOLDER = "<!-- section: bench (issue 7) -->"
# In table order: part N is PARTS[N-1].
PARTS = ("oneshot", "turns", "stream", "economy", "memory", "gateway", "latency", "recall", "standing",
         "counts", "tools", "docs", "log")
_PART_TITLE = re.compile(r"^\*\*(\d+)\. ")


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def oneshot_md(result: oneshot.OneShotResult) -> list[str]:
    """Return the one-shot latency table: median and best wall time, CPU time, ratio to the floor."""
    floor = next(wall for name, wall, _, _ in result.rows if name.startswith("floor"))
    rows = [[name, ms(wall), ms(best), ms(cpu), f"{wall / floor:.2f}×"]
            for name, wall, best, cpu in result.rows]
    lines = [f"**1. One-shot latency** (process start to answer printed; median of {result.runs} runs, "
             "interleaved; ms)", ""]
    lines += _table(["command", "median", "best", "CPU (median)", "vs floor"], rows)
    if result.skipped:
        lines += ["", f"Not measured this run: {', '.join(result.skipped)}."]
    offenders = ", ".join(f"`{name}` {value:,.0f}" for name, value in result.offenders)
    lines += ["", f"Top imports of a one-shot run (`python -X importtime`, cumulative ms): {offenders}."]
    return lines


def turns_md(rows: Sequence[turns.TurnRow]) -> list[str]:
    """Return the per-turn overhead table (µs) with the ratio of each size to the smallest, and the whole
    turn on loopback against json.dumps of its body."""
    first = rows[0].plan
    body = [[f"{r.messages:,}", f"{r.count * 1e6:,.1f}", f"{r.fit * 1e6:,.1f}", f"{r.payload * 1e6:,.1f}",
             f"{r.plan * 1e6:,.1f}", f"{r.plan / first:,.1f}×", f"{r.serialize * 1e6:,.0f}",
             f"{r.send * 1e6:,.0f}", f"{r.send / r.serialize:,.1f}×"] for r in rows]
    lines = ["**2. Per-turn client overhead** (median µs; the whole history is resent; count to plan: no "
             "network; send: the whole turn on loopback, client thread CPU)", ""]
    return lines + _table(["messages held", "count", "fit", "payload", "plan (all)", f"vs {rows[0].messages}",
                           "json.dumps of the body (reference)", "send: Enter to reply", "send / json.dumps"],
                          body)


def stream_md(rows: Sequence[stream.StreamRow]) -> list[str]:
    """Return the streaming-render table (CPU seconds and µs per chunk)."""
    body = [[r.shape, f"{r.words:,}", f"{r.cpu:.3f}", f"{r.cpu / r.words * 1e6:,.0f}"] for r in rows]
    lines = [f"**3. Streaming render** (one word per chunk at {stream.WORDS_PER_SECOND:.0f} words/s on a "
             "simulated clock, Rich to a null 100×40 terminal; CPU)", ""]
    return lines + _table(["reply", "chunks", "CPU s", "µs per chunk"], body)


def economy_md(rows: Sequence[economy.EconomyRow], turns_run: int) -> list[str]:
    """Return the context-economy table: tokens, cached, the bill under two cached prices against the
    naive full resend (and under OpenAI's caching rules), cache breaks, the largest request, kept."""
    naive = rows[0]

    def versus(mine: float, theirs: float) -> str:
        return f"{mine:,.0f} ({mine / theirs:.2f}×)"

    body = [[r.policy, f"{r.sent:,}", f"{r.cached:,}", versus(r.bills[0], naive.bills[0]),
             versus(r.bills[1], naive.bills[1]), f"{r.cached_openai:,}",
             versus(r.bill_openai, naive.bill_openai),
             f"{r.breaks:,}", f"{r.largest:,}", f"{r.over_budget}", f"{r.kept}/{len(economy.CONSTRAINTS)}"]
            for r in rows]
    lines = [f"**4. Context economy, as billed** ({turns_run} turns, 5 constraints in turns 1-5, budget "
             f"{economy.BUDGET:,} tokens with {economy.RESERVE} reserved for the reply; prompt tokens as the "
             "server counts and caches them, summary requests included; the prompt side's bill in "
             "input-token units, with cached input at 10% and at 2%, and its ratio to the naive full resend "
             "`none`; the last bill with OpenAI's caching rules: nothing under 1,024 tokens, then 128-token "
             "steps)", ""]
    return lines + _table(["policy", "prompt tokens", "cached", "bill at 10%", "bill at 2%",
                           "cached (OpenAI rules)", "bill at 10% (OpenAI rules)", "cache breaks",
                           "largest request", "over budget", "constraints kept"], body)


def latency_md(rows: Sequence[local_latency.LatencyRow], turns_run: int) -> list[str]:
    """Return the local-latency table: per-turn time and evaluated tokens after the first eviction."""
    fit = rows[0].mean_after_first_eviction()
    body = [[r.label, str((r.first_eviction or 0) + 1), f"{r.mean_after_first_eviction():.2f}",
             f"{r.mean_after_first_eviction() / fit:.2f}×" if fit else "-",
             f"{r.evaluated_after_first_eviction():,.0f}", f"{max(r.seconds):.2f}"] for r in rows]
    lines = [f"**7. Local latency** (the bundled SmolLM2-135M through llama-cpp-python's server, {turns_run} "
             f"turns, budget {local_latency.BUDGET:,}, replies of at most {local_latency.MAX_TOKENS} tokens; "
             "seconds per turn and prompt tokens the server evaluated, i.e. not read from its KV cache, "
             "averaged over the turns from the first eviction on)", ""]
    return lines + _table(["policy", "first eviction at turn", "s per turn", "vs evict to fit",
                           "tokens evaluated per turn", "slowest turn (s)"], body)


def memory_md(results: Sequence[memory.MemoryResult]) -> list[str]:
    """Return the memory table (MiB)."""
    body = [[f"{r.messages:,}", "exact (encoding loaded)" if r.exact else "byte bound (no encoding)",
             f"{r.before_kib / 1024:.1f}", f"{max(r.peak_kib, r.after_kib) / 1024:.1f}",
             f"{(max(r.peak_kib, r.after_kib) - r.before_kib) / 1024:.1f}", f"{r.chars / 1024 / 1024:.2f}"]
            for r in results]
    lines = ["**5. Memory** (a fresh process with the REPL's imports holding the conversation and its "
             "next payload; MiB)", ""]
    return lines + _table(["messages", "counting", "RSS before", "peak RSS", "growth", "text held"], body)


def gateway_md(result: gateway.GatewayResult) -> list[str]:
    """Return the gateway table: per turn, the replica that answered, its prompt and cached tokens."""
    title = "**6. Behind a gateway**"
    if result.skipped is not None:
        return [f"{title}: not measured this run; it {result.skipped}."]
    spread, sticky = (next(r for r in result.runs if r.group == g) for g in gateway.GROUPS)
    sources = sorted({t.source for r in result.runs for t in r.turns})
    where = " and ".join("the replies" if s == "reply" else "the replica's log (llama-cpp-python reports it "
                         "nowhere else)" for s in sources)
    lines = [f"{title} (LiteLLM proxy {result.litellm_version}, each model group over two llama.cpp replicas "
             f"with the bundled model; the same {len(spread.turns)}-turn conversation through each, not "
             "streamed, temperature 0; `spread` is LiteLLM's default routing, `sticky` adds "
             "`deployment_affinity`; cached = prompt tokens the replica did not compute again, "
             f"from {where})", ""]
    rows = [[str(i), str(a.replica), f"{a.prompt:,}", f"{a.cached:,}", str(b.replica), f"{b.prompt:,}",
             f"{b.cached:,}"] for i, (a, b) in enumerate(zip(spread.turns, sticky.turns, strict=True), 1)]

    def share(r: gateway.GroupRun) -> str:
        return f"{r.cached:,} ({r.cached / r.prompt:.0%})" if r.prompt else "0"

    rows.append(["all", "", f"{spread.prompt:,}", share(spread), "", f"{sticky.prompt:,}", share(sticky)])
    head = ["turn", "spread: replica", "prompt", "cached", "sticky: replica", "prompt", "cached"]
    lines += _table(head, rows)
    saved = 1 - sticky.computed / spread.computed if spread.computed else 0.0
    lines += ["", f"Prompt tokens computed (prompt − cached): spread {spread.computed:,}, sticky "
              f"{sticky.computed:,}; sticky routing saved {saved:.0%} of the prompt work here. Spread "
              "routing is random, so another run lands the turns differently: a turn that reaches the "
              "replica that answered the turn before reuses all of it, one that reaches the other replica "
              "reuses only what that replica computed for its own last turn (llama-cpp-python keeps one "
              "prompt's cache)."]
    return lines


def split_parts(block: str) -> tuple[list[str], dict[int, list[str]]]:
    """Return a results block's head lines and its parts by number (outer blank lines trimmed)."""
    head: list[str] = []
    parts: dict[int, list[str]] = {}
    current: list[str] = head
    for line in block.splitlines():
        match = _PART_TITLE.match(line)
        if match:
            current = parts.setdefault(int(match.group(1)), [])
        current.append(line)
    trimmed = {n: "\n".join(lines).strip("\n").splitlines() for n, lines in parts.items()}
    return "\n".join(head).strip("\n").splitlines(), trimmed


def join_parts(head: Sequence[str], parts: dict[int, list[str]]) -> str:
    """Return a results block from its head lines and parts (in part order, a blank line between)."""
    lines = [*head, ""]
    for number in sorted(parts):
        lines += [*parts[number], ""]
    return "\n".join(lines).rstrip() + "\n"


def read_block(path: Path) -> str:
    """Return the results block now between the markers of ``path`` ("" if there is none yet)."""
    text = path.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"
    return ""


def recall_md(runs: Sequence[recall.RecallRun], rows: Sequence[recall.SearchRow],
              turns_run: int) -> list[str]:
    """Return the recall tables: facts present in each question's request with and without auto
    recall, what recall added, and the time of a search (and of all of recall) by the log's size."""
    questions = len(recall.FACTS)
    requests = runs[0].requests
    body = [[r.label, f"{sum(r.present)}/{questions}", f"{sum(r.extra_questions) / questions:,.0f}",
             f"{r.extra_all / r.requests:,.1f}", f"{r.recalling_fillers}",
             f"{r.largest:,} / {recall.BUDGET:,}"] for r in runs]
    lines = [f"**8. Recall** ({turns_run} turns, {questions} facts stated in turns 1-{questions} and not "
             f"pinned, drop-oldest at a budget of {recall.BUDGET:,} tokens ({recall.RESERVE} held for the "
             f"reply), then {questions} questions each needing one fact; the conversation logged in a real "
             "SQLite file; auto recall within its default budget, a tenth of the budget)", ""]
    lines += _table(["run", "facts in the question's request", "tokens recall added per question",
                     f"per request, all {requests}", "filler turns that recalled anything",
                     "largest request (with the reply reserve) / budget"], body)
    search = [[f"{r.messages:,}", f"{r.evicted:,}", ms(r.search), ms(r.per_request), f"{r.found}/{questions}"]
              for r in rows]
    lines += ["", "Searching the log (median of the 10 questions, each asked several times; ms):", ""]
    lines += _table(["messages in the log", "evicted (searched)", "one search (bm25, FTS5)",
                     "all of auto recall before a request", "fact found first"], search)
    return lines


def standing_md(rows: Sequence[standing.SetRow], per_message: float, per_sentence: float,
                messages: int, chats: Sequence[standing.ChatRun], turns_run: int) -> list[str]:
    """Return the standing-memory tables: the detector on each round of the labelled set (now, and as
    first measured), its speed, and the scripted chat under the old and the new defaults."""
    total = rows[-1]
    lines = [f"**9. Standing memory** (the detector on the labelled set of `bench/standing_set.py`, "
             f"{total.standing + total.not_standing} sentences in "
             f"{len({r.name.split(',')[0] for r in rows[:-1]})} rounds, each written before the rules were "
             "changed for it, from the eighth on by helpers that saw neither the rules nor the other rounds; "
             "goal: precision and recall at least 0.9)", ""]

    def first(row: standing.SetRow) -> str:
        return f"{row.first[0]:.3f} / {row.first[1]:.3f}" if row.first else ""

    body = [[r.name, f"{r.standing} / {r.not_standing}", f"{r.precision:.3f}", f"{r.recall:.3f}", first(r)]
            for r in rows]
    lines += _table(["sentences", "standing / not", "precision", "recall",
                     "first measured (precision / recall)"], body)
    last = rows[-2]
    lines += ["", f"The {last.name} was written and committed before the last pass over the rules, which "
              "was made for the round before it only, and no rule was changed after it: its first figures "
              f"({first(last)}, the rules before that pass) and its figures now ({last.precision:.3f} / "
              f"{last.recall:.3f}) are what sentences the rules were never fixed for get; the earlier "
              "rounds' figures now are on sentences the rules were fixed for. Detection costs "
              f"{per_message * 1e6:,.0f} µs of CPU per user message ({messages} messages of the chat below) "
              f"and {per_sentence * 1e6:,.0f} µs per sentence of the set."]
    if not chats:
        return lines
    needs = len(chats[0].met)
    lines += ["", f"The scripted chat ({turns_run} turns through the real client and the fake server, the "
              f"log in a real SQLite file, budget {standing.BUDGET_CHAT:,} with {standing.RESERVE_CHAT} held "
              f"for the reply; {needs} requirements and facts stated in everyday words, "
              f"{chats[0].filler_turns} filler turns with look-alike traps, then {needs} requests that each "
              "need one; goals: every one present in the request that needs it, at most 2% of the filler "
              f"turns still sent {standing.LONG} turns or more after their eviction, as a note or recalled):",
              ""]

    def share(count: int, of: int) -> str:
        return f"{count} ({count / of:.1%})" if of else "0"

    body = [[c.label, f"{sum(c.met)}/{needs}", f"{c.notes}", share(c.filler_noted, c.filler_turns),
             share(c.filler_recalled, c.filler_turns), share(c.filler_resent, c.filler_turns),
             ", ".join(f"{recent}/{whole}" for recent, whole in c.windows),
             f"{c.largest:,} / {standing.BUDGET_CHAT:,}", f"{c.sent:,} ({c.cached:,} cached)"] for c in chats]
    lines += _table(["run", "needed and present", "notes kept", "filler kept as a note",
                     "filler recalled long after", "filler still sent long after (goal: at most 2%)",
                     "recent / all turns sent after turns " + ", ".join(map(str, standing.WINDOW_AT)),
                     "largest request / budget", "prompt tokens"], body)
    return lines


def counts_md(runs: Sequence[counts.CountRun], skipped: str = "") -> list[str]:
    """Return the token-count tables: per run the meter's error against the server's count (at the first
    turn, on average, after the third reply), refusals, and the counting work per turn; then per turn."""
    def pct(value: float) -> str:
        return f"{value:+.2%}" if value else "0%"

    rows = []
    for run in runs:
        figures = counts.summary(run)
        late = run.after(3)
        rescales = [n for n in run.rescaled if n]
        rows.append([run.label, str(len(run.ours)), pct(figures["first"]), f"{figures['mean_abs']:.2%}",
                     f"{figures['max_abs_after_3']:.2%}",
                     f"{figures['worst_under_after_3']:.2%}" if any(e < 0 for e in late) else "none",
                     str(run.refused), str(run.evictions), f"{run.largest:,} / {run.window:,}",
                     f"{min(run.tokenized)}-{max(run.tokenized)}",
                     f"{len(rescales)} ({max(rescales, default=0)} counts)"])
    lines = [f"**10. Token counts** ({len(runs[0].ours) if runs else 0} turns each at a budget equal to the "
             "context window; the meter's count of each request against the prompt tokens the server "
             "reported, as a share of the server's; texts tokenized per turn (by tiktoken or the server); "
             "turns whose held counts were rescaled after the calibration moved (a lookup each, no "
             "tokenizing) and the most counts one rescale touched)", ""]
    lines += _table(["run", "turns", "error, turn 1", "mean abs. error", "max abs. error after the 3rd reply",
                     "worst undercount after the 3rd reply", "refused", "evictions",
                     "largest request (+ reserve) / window", "texts tokenized per turn", "rescales"], rows)
    if skipped:
        lines += ["", f"Not measured this run: {skipped}."]
    if runs:
        per_turn = [[str(i + 1), *(f"{r.ours[i]:,} / {r.reported[i]:,} ({pct(r.errors[i])})" for r in runs)]
                    for i in range(len(runs[0].ours))]
        lines += ["", "<details><summary>Per turn: the meter's count / the server's (error)</summary>", ""]
        lines += _table(["turn", *(r.label for r in runs)], per_turn)
        lines += ["", "</details>"]
    return lines


def tools_md(big: Sequence[tools.BigRow], idle: Sequence[tools.IdleRow], runs: int) -> list[str]:
    """Return the tools tables: a big result's cost (goal: under 1 s and 100 MB), and one-shot "hello" with
    servers configured against --no-tools (goal: within 1.1x, wall and CPU)."""
    lines = [f"**11. Tools** (a {big[0].megabytes:,.0f} MB tool result read and cut to 2,000 tokens, from a "
             "server that has it ready; median of 3 fresh processes; goal: under 1 s and 100 MB)", ""]
    lines += _table(["result", "wall (call and cut)", "CPU", "peak RSS before the call", "peak RSS after",
                     "characters the model gets"],
                    [[f"{r.megabytes:,.0f} MB of {r.kind}", ms(r.wall) + " ms", ms(r.cpu) + " ms",
                      f"{r.rss_before:,.0f} MB",
                      f"{r.rss_after:,.0f} MB (+{r.rss_after - r.rss_before:,.1f})",
                      f"{r.kept:,}"] for r in big])
    if idle:
        floor = idle[-1]
        lines += ["", f"One-shot \"hello\" (process start to answer; median of {runs} interleaved runs; "
                  "goal: within 1.1x of --no-tools, wall and CPU):", ""]
        lines += _table(["command", "wall", "CPU", "vs --no-tools (wall, CPU)"],
                        [[r.name, ms(r.wall) + " ms", ms(r.cpu) + " ms",
                          f"{r.wall / floor.wall:.2f}×, {r.cpu / floor.cpu:.2f}×"] for r in idle])
    return lines


def docs_md(result: docs.DocsResult) -> list[str]:
    """Return the tables of part 12: the skills' costs and what they did to the cache, then retrieval on
    the real corpus (answered, off-topic, time) and indexing 10 MB."""
    lines = ["**12. Instructions, skills and documents** (`bench/docs.py`; o200k_base counts)", ""]
    skills = result.skills
    if skills is not None:
        framing = ", ".join(f"{count}: {framing} ({size:,} in all)"
                            for count, size, framing in skills.framing)
        lines += [f"Skills index, tokens beyond the names and descriptions, by number of skills: {framing}. "
                  f"A skill's body: {skills.body_tokens:,} tokens.", ""]
        rows = [[phase, f"{requests}", f"{carried}/{requests}"] for phase, requests, carried in skills.phases]
        lines += _table(["requests", "sent", "with the skill's body"], rows)
        breaks = "; ".join(skills.breaks) or "none"
        lines += ["", f"Cache breaks over the {skills.turns} turns: {len(skills.breaks)} ({breaks}). With "
                  f"the model's use_skill tool instead: the body came back as the tool's result "
                  f"({'yes' if skills.tool_body_in_result else 'no'}), {skills.tool_requests} requests, "
                  f"{skills.tool_breaks} cache breaks.", ""]
    if result.skipped:
        return [*lines, f"Documents: not measured this run; {result.skipped}."]
    head = ["corpus", "indexed", "questions answered (chunk in the request)", "answering chunk ranked first",
            "tokens of documents per question (median)", "off-topic messages with no chunk",
            "retrieval per turn, median / max (ms)", "the same, CPU (ms)"]
    rows = []
    for corpus in result.corpora:
        asked = corpus.asked
        wall = sorted(a.seconds * 1000 for a in asked)
        cpu = sorted(a.cpu * 1000 for a in asked)
        first = sum(1 for a in asked if a.rank == 1)
        tokens = sorted(a.tokens for a in asked)
        size = f"{corpus.files:,} files, {corpus.megabytes:.2f} MB, {corpus.chunks:,} chunks"
        answered = f"{corpus.answered}/{len(asked)} ({corpus.answered / len(asked):.0%})"
        times = f"{wall[len(wall) // 2]:.1f} / {wall[-1]:.1f}"
        rows.append([corpus.label, size, answered, f"{first}/{len(asked)}", f"{tokens[len(tokens) // 2]:,}",
                     f"{corpus.off_topic_clean}/{len(docs.OFF_TOPIC)}", times,
                     f"{cpu[len(cpu) // 2]:.1f} / {cpu[-1]:.1f}"])
    lines += _table(head, rows)
    if result.index_files:
        load = ", ".join(f"{value:.1f}" for value in result.load)
        lines += ["", f"Indexing {result.index_megabytes:.1f} MB of Django's docs and code "
                  f"({result.index_files:,} files, {result.index_chunks:,} chunks) into a fresh index: "
                  f"{result.index_seconds:.1f} s "
                  f"({result.index_cpu:.1f} s of CPU; load average {load} while this part ran)."]
    missed = [a.question for a in result.corpora[0].asked if not a.answered] if result.corpora else []
    if missed:
        lines += ["", "Not answered on Flask's docs alone: " + "; ".join(f"“{q}”" for q in missed) + "."]
    return lines


def log_md(result: log.LogResult) -> list[str]:
    """Return the log's table: bytes and write time per turn at each mark, the whole log against the
    conversation's text, and reading it back at the last mark."""
    last = result.marks[-1].turns
    lines = [f"**13. The log** ({last:,} turns of a {log.BUDGET:,}-token window, drop-oldest down to half "
             "of it, ~60-word questions and ~260-word replies, logged into a real SQLite file; per turn over "
             f"the {log.WINDOW} turns before each mark; goals: write time flat within 2× from turn 100 to "
             "10,000 and under 5 ms, the log at most 3× the conversation's text plus a fixed cost per turn)",
             ""]
    body = [[f"{m.turns:,}", f"{m.messages:,}", f"{m.bytes_per_turn:,.0f}", f"{m.text_per_turn:,.0f}",
             f"{m.bytes_per_turn / m.text_per_turn:.2f}×", f"{m.write_ms:.2f}", f"{m.slowest_ms:.1f}",
             f"{m.log_bytes / 1e6:,.1f} MB / {m.text_bytes / 1e6:,.1f} MB "
             f"({m.log_bytes / m.text_bytes:.2f}×)"]
            for m in result.marks]
    lines += _table(["turns", "messages", "log bytes added per turn", "text bytes per turn", "ratio",
                     "write ms per turn (median)", "slowest write (ms)", "whole log / whole text"], body)
    lines += ["", f"At {last:,} turns ({result.evicted:,} messages evicted), of their own work (process "
              f"start-up aside; goals 50 ms, 100 ms): reading the conversation back for `-c` (opening the "
              f"log and `restore`) {result.restore_ms:,.0f} ms, then `Session.load` (the session's recount, "
              f"not the log's work) {result.load_ms:,.0f} ms; `logs list` {result.list_ms:,.1f} ms; "
              f"`logs search` {result.search_ms:,.1f} ms."]
    return lines


def write_results(path: Path, block: str) -> None:
    """Put ``block`` between the results markers of ``path`` (or in place of the section placeholder)."""
    text = path.read_text(encoding="utf-8")
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        text = head + BEGIN + "\n" + block + "\n" + END + tail
    elif PLACEHOLDER in text:
        text = text.replace(PLACEHOLDER, BEGIN + "\n" + block + "\n" + END, 1)
    else:
        raise SystemExit(f"{path}: no bench results markers to write between")
    path.write_text(text, encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> str:
    """Run the suite and return the results block (Markdown); write it into docs/benchmarks.md unless told
    not to."""
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the suite works")
    parser.add_argument("--runs", type=int, default=None, help="one-shot runs per contender (default 10)")
    parser.add_argument("--no-llm", action="store_true", help="leave llm out of the one-shot comparison")
    parser.add_argument("--no-gateway", action="store_true", help="leave the gateway part out")
    parser.add_argument("--no-local", action="store_true", help="leave the bundled model's latency out")
    parser.add_argument("--only", default=None, metavar="PART[,PART...]",
                        help=f"run only these parts ({', '.join(PARTS)}); the page keeps the others")
    # --no-readme and --readme: the names from when the tables were in the README.
    parser.add_argument("--no-write", "--no-readme", dest="no_write", action="store_true",
                        help="print the results only")
    parser.add_argument("--into", "--readme", dest="into", type=Path, default=RESULTS, metavar="FILE",
                        help="the file to write the results into (default: docs/benchmarks.md)")
    args = parser.parse_args(argv)
    quick = args.quick
    runs = args.runs or (1 if quick else 10)
    started = time.monotonic()
    chosen = PARTS if args.only is None else tuple(p.strip() for p in args.only.split(",") if p.strip())
    unknown = sorted(set(chosen) - set(PARTS))
    if unknown or not chosen:
        parser.error(f"--only takes parts from {', '.join(PARTS)}; got {args.only!r}")
    if args.no_gateway:
        chosen = tuple(p for p in chosen if p != "gateway")
    if args.no_local:
        chosen = tuple(p for p in chosen if p != "latency")

    from tests.fakeserver import FakeServer

    def say(what: str) -> None:
        print(f"bench: {what} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)

    made: dict[int, list[str]] = {}
    if "oneshot" in chosen:
        say("one-shot latency")
        with FakeServer() as server:
            shot = oneshot.run(server.url, runs=runs, with_llm=not args.no_llm)
        made[1] = oneshot_md(shot)
    if "turns" in chosen:
        say("per-turn overhead")
        turn_rows = turns.run((10, 100) if quick else (10, 100, 1_000, 10_000), repeat=3 if quick else 30)
        made[2] = turns_md(turn_rows)
    if "stream" in chosen:
        say("streaming render")
        made[3] = stream_md(stream.run((50, 100) if quick else (1_000, 2_500, 5_000)))
    if "economy" in chosen:
        say("context economy")
        turns_run = 30 if quick else 200
        made[4] = economy_md(economy.run(turns_run), turns_run)
    if "memory" in chosen:
        say("memory")
        size = 100 if quick else 10_000
        made[5] = memory_md([memory.run(size, exact=True), memory.run(size, exact=False)])
    if "gateway" in chosen:
        say("behind a gateway")
        result = gateway.run(quick=quick)
        if result.skipped is not None and args.only is not None:
            say(f"the gateway part {result.skipped}: the page keeps the table it has")
        else:
            made[6] = gateway_md(result)
    if "latency" in chosen:
        if local_latency.available():
            say("local latency")
            latency_turns = 8 if quick else 40
            made[7] = latency_md(local_latency.run(latency_turns), latency_turns)
        elif args.only is None:
            made[7] = ["**7. Local latency**: not run (needs the `[local]` extra)."]
    if "recall" in chosen:
        say("recall")
        recall_turns = 30 if quick else 200
        runs_made, search_rows = recall.run(recall_turns, (200, 2_000) if quick else recall.SEARCH_SIZES)
        made[8] = recall_md(runs_made, search_rows, recall_turns)
    if "standing" in chosen:
        say("standing memory")
        from bench.standing_set import ROUNDS

        sentences = [s for _, yes, no in ROUNDS for s, _ in (*yes, *no)]
        texts = [standing.chat_text(turn) for turn in range(1, 201)]
        chat_turns = 200
        made[9] = standing_md(standing.set_rows(), standing.speed(texts), standing.speed(sentences),
                              len(texts), standing.run_chats(chat_turns), chat_turns)
    if "counts" in chosen:
        say("token counts")
        count_turns = 12 if quick else 40
        count_runs, skipped = [], ""
        if counts.available():
            count_runs.append(counts.run_local(count_turns))
        else:
            skipped = "the bundled model (needs the `[local]` extra)"
        count_runs += [counts.run_fake(count_turns), counts.run_fake(count_turns, mixed=True)]
        made[10] = counts_md(count_runs, skipped)
    if "tools" in chosen:
        say("tools")
        big = tools.run_big(5 if quick else tools.BIG_MB, repeat=1 if quick else 3)
        with FakeServer() as server:
            idle = tools.run_idle(server.url, runs=runs)
        made[11] = tools_md(big, idle, runs)
    if "docs" in chosen:
        say("instructions, skills and documents")
        made[12] = docs_md(docs.run(quick=quick))
    if "log" in chosen:
        say("the log")
        made[13] = log_md(log.run((100, 1_000) if quick else log.MARKS))
    say("done")

    today = datetime.date.today().isoformat()
    note = " (--quick: sizes too small to mean anything)" if quick else ""
    if args.only is None:
        block = join_parts([f"Measured {today} on {machine()}{note}."], made)
    else:
        # Only some parts ran: they replace their own tables, and the page keeps the others as measured.
        head, parts = split_parts(read_block(args.into))
        for number, lines in made.items():
            parts[number] = [*lines, "", f"(This part measured {today} on {machine()}{note}, apart from "
                             f"the rest: `--only {args.only}`.)"]
        block = join_parts(head or [f"Measured {today} on {machine()}{note}."], parts)
    print(block)
    if not args.no_write:
        write_results(args.into, block)
        print(f"bench: results written into {args.into}", file=sys.stderr)
    return block


if __name__ == "__main__":
    main()
