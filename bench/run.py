"""Run every benchmark and write the results table into the README.

    python bench/run.py              # the whole suite (a few minutes), README updated
    python bench/run.py --no-readme  # print the tables only
    python bench/run.py --quick      # tiny sizes: checks the suite works, numbers mean nothing

One-shot latency starts the project's fake server (tests/fakeserver.py) on loopback
and times three contenders against it; ``llm`` is installed from PyPI into
bench/.venv-llm on first use (``--no-llm`` leaves it out).
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``bench`` importable from the checkout
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import economy, local_latency, memory, oneshot, stream, turns  # noqa: E402
from bench.common import ROOT, machine, ms  # noqa: E402

README = ROOT / "README.md"
BEGIN = "<!-- bench:results:begin (written by python bench/run.py) -->"
END = "<!-- bench:results:end -->"
PLACEHOLDER = "<!-- section: bench (issue 7) -->"


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
    """Return the per-turn overhead table (µs) with the ratio of each size to the smallest."""
    first = rows[0].plan
    body = [[f"{r.messages:,}", f"{r.count * 1e6:,.1f}", f"{r.fit * 1e6:,.1f}", f"{r.payload * 1e6:,.1f}",
             f"{r.plan * 1e6:,.1f}", f"{r.plan / first:,.1f}×", f"{r.serialize * 1e6:,.0f}"] for r in rows]
    lines = ["**2. Per-turn client overhead** (no network; median µs; the whole history is resent)", ""]
    return lines + _table(["messages held", "count", "fit", "payload", "plan (all)", f"vs {rows[0].messages}",
                           "json.dumps of the body (reference)"], body)


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
    lines = [f"**6. Local latency** (the bundled SmolLM2-135M through llama-cpp-python's server, {turns_run} "
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


def write_readme(path: Path, block: str) -> None:
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
    """Run the suite and return the results block (Markdown); write it into the README unless told not to."""
    parser = argparse.ArgumentParser(prog="bench/run.py", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the suite works")
    parser.add_argument("--runs", type=int, default=None, help="one-shot runs per contender (default 10)")
    parser.add_argument("--no-llm", action="store_true", help="leave llm out of the one-shot comparison")
    parser.add_argument("--no-local", action="store_true", help="leave the bundled model's latency out")
    parser.add_argument("--no-readme", action="store_true", help="print the results only")
    parser.add_argument("--readme", type=Path, default=README, help="the file to write the results into")
    args = parser.parse_args(argv)
    quick = args.quick
    runs = args.runs or (1 if quick else 10)
    started = time.monotonic()

    from tests.fakeserver import FakeServer

    def say(what: str) -> None:
        print(f"bench: {what} ({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)

    say("one-shot latency")
    with FakeServer() as server:
        shot = oneshot.run(server.url, runs=runs, with_llm=not args.no_llm)
    say("per-turn overhead")
    turn_rows = turns.run((10, 100) if quick else (10, 100, 1_000, 10_000), repeat=3 if quick else 30)
    say("streaming render")
    stream_rows = stream.run((50, 100) if quick else (1_000, 2_500, 5_000))
    say("context economy")
    turns_run = 30 if quick else 200
    economy_rows = economy.run(turns_run)
    latency_rows: list[local_latency.LatencyRow] = []
    latency_turns = 8 if quick else 40
    if not args.no_local and local_latency.available():
        say("local latency")
        latency_rows = local_latency.run(latency_turns)
    say("memory")
    size = 100 if quick else 10_000
    memory_rows = [memory.run(size, exact=True), memory.run(size, exact=False)]
    say("done")

    today = datetime.date.today().isoformat()
    note = " (--quick: sizes too small to mean anything)" if quick else ""
    lines = [f"Measured {today} on {machine()}{note}.", ""]
    latency = latency_md(latency_rows, latency_turns) if latency_rows else [
        "**6. Local latency**: not run (needs the `[local]` extra; `--no-local` leaves it out)."]
    for part in (oneshot_md(shot), turns_md(turn_rows), stream_md(stream_rows),
                 economy_md(economy_rows, turns_run), memory_md(memory_rows), latency):
        lines += [*part, ""]
    block = "\n".join(lines).rstrip() + "\n"
    print(block)
    if not args.no_readme:
        write_readme(args.readme, block)
        print(f"bench: results written into {args.readme}", file=sys.stderr)
    return block


if __name__ == "__main__":
    main()
