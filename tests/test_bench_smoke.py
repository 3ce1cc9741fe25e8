"""The benchmark suite (bench/) keeps working: every part runs at tiny sizes. No timing is asserted.

The gateway part needs the gateway and local extras (the LiteLLM proxy, llama.cpp and the bundled
model) and is skipped without them, with the reason.

Also the two properties the benchmarks pushed into the renderer: the streamed reply's live
view stays a screenful however long the unfinished block grows, and scanning only the new
lines prints exactly what rescanning the whole tail did.
"""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from bench import counts, docs, economy, gateway, memory, oneshot, recall, run, standing, stream, turns
from bench.common import ROOT, clean_env
from stateless_chat.ui import render
from stateless_chat.ui.render import ReplyStream
from tests.fakeserver import FakeServer


def test_oneshot_times_ours_and_the_floor(server: FakeServer) -> None:
    result = oneshot.run(server.url, runs=1, with_llm=False)
    names = [row[0] for row in result.rows]
    assert names[0] == "stateless-chat" and names[1].startswith("floor")
    assert all(wall > 0 and cpu > 0 for _, wall, _, cpu in result.rows)
    assert result.skipped == ["llm"]
    # a plain one-shot run imports neither openai (wire.direct sends the streamed request) nor typer
    # (cli.quick reads the command line); the backend module, which imports httpx2, shows up
    offenders = dict(result.offenders)
    assert "openai" not in offenders and "typer" not in offenders
    assert "stateless_chat.wire.openai_backend" in offenders
    # every timed run really got the answer: warm-up + 1 run per contender, and the importtime run
    assert len([r for r in server.requests if r["messages"][-1]["content"] == "q"]) == 2 * 2 + 1


def test_turns_measure_every_step_over_the_whole_history() -> None:
    rows = turns.run((10, 40), repeat=2)
    assert [r.messages for r in rows] == [10, 40]
    assert all(min(r.count, r.fit, r.payload, r.plan, r.serialize, r.send) > 0 for r in rows)
    session = turns.history_session(40)
    assert len(session.body_of(session.plan("next", summarize=False).request)["messages"]) == 41


def test_stream_renders_every_shape() -> None:
    rows = stream.run((20,))
    assert [r.shape for r in rows] == ["paragraphs", "one paragraph", "code block"]
    assert all(r.cpu > 0 for r in rows)
    for shape in ("paragraphs", "one paragraph", "code block"):
        assert len(stream.chunks(shape, 30)) == 30


def test_the_stream_bench_leaves_the_colours_of_later_consoles_alone() -> None:
    """Rich keeps a style's escape codes on the style, made for the first console that draws it, and
    hands equal styles out of shared caches: a code block drawn on the bench's null terminal (16
    colours here) would leave every later truecolor console of the process drawing it in 16 colours.
    A fresh process, so that nothing else has drawn the code block's styles first."""
    child = (
        "import io\n"
        "from rich.console import Console\n"
        "from rich.markdown import Markdown\n"
        "from bench import stream\n"
        "stream.run((20,))\n"
        "out = Console(file=io.StringIO(), force_terminal=True, color_system='truecolor', width=30)\n"
        "out.print(Markdown('```python\\nx = 1  # one\\n```'))\n"
        "print(out.file.getvalue())\n"
    )
    env = clean_env(TERM="xterm")  # what Rich takes for 16 colours, unless COLORTERM says truecolor
    env.pop("COLORTERM", None)
    done = subprocess.run([sys.executable, "-c", child], env=env, capture_output=True, text=True, timeout=120,
                          cwd=ROOT, check=True)
    styles = [params for params in re.findall(r"\x1b\[([0-9;]*)m", done.stdout) if params not in ("", "0")]
    assert styles and all("48;2;39;40;34" in params for params in styles)  # monokai's background in truecolor


def test_economy_pins_and_summaries_keep_the_constraints_while_the_cache_holds() -> None:
    names = ("none", "drop-oldest 1.0", "drop-oldest", "drop-oldest + pins", "summarize", "summarize + pins",
             "default now")
    rows = dict(zip(names, economy.run(40), strict=True))  # in the order of economy.POLICIES
    naive = rows["none"]
    assert naive.kept == 5 and naive.largest > economy.BUDGET and naive.breaks == 0
    for name in ("drop-oldest + pins", "summarize", "summarize + pins", "default now"):
        assert rows[name].kept == 5, name
        assert rows[name].sent < naive.sent and rows[name].over_budget == 0, name
    assert rows["drop-oldest"].kept < 5  # the dilemma: plain dropping loses the early constraints
    assert rows["summarize"].requests > naive.requests  # the summary calls are counted too
    # Evicting to fit breaks the cache every turn once full; the low-water mark breaks it rarely.
    assert rows["drop-oldest 1.0"].breaks > 2 * rows["drop-oldest"].breaks
    assert rows["drop-oldest"].cached > rows["drop-oldest 1.0"].cached


def test_recall_brings_every_fact_back_that_drop_oldest_alone_loses() -> None:
    runs, rows = recall.run(30, (200,))
    alone, auto = runs
    assert (alone.label, auto.label) == ("drop-oldest alone", "auto recall")
    assert sum(alone.present) == 0 and alone.extra_all == 0  # 30 turns evict all ten facts
    assert sum(auto.present) == len(recall.FACTS) and all(auto.extra_questions)
    assert auto.recalling_fillers == 0 and max(alone.largest, auto.largest) <= recall.BUDGET
    [row] = rows
    assert (row.messages, row.evicted, row.found) == (200, 180, len(recall.FACTS))
    assert row.search > 0 and row.per_request > 0
    lines = run.recall_md(runs, rows, 30)
    assert lines[0].startswith("**8. Recall** (30 turns") and "| auto recall | 10/10 |" in "\n".join(lines)


def test_counts_compare_the_meter_with_the_servers_count_turn_by_turn() -> None:
    english, mixed = counts.run_fake(8), counts.run_fake(8, mixed=True)
    for result in (english, mixed):
        assert len(result.ours) == len(result.reported) == len(result.tokenized) == 8
        assert all(r > 0 for r in result.reported) and result.refused == 0
        assert "calibrated from 8 replies" in result.how
    assert abs(counts.summary(english)["max_abs_after_3"]) < 0.02
    lines = run.counts_md([english, mixed])
    assert lines[0].startswith("**10. Token counts**") and any("<details>" in line for line in lines)


def test_docs_part_measures_skills_and_asks_questions_of_the_real_corpus() -> None:
    """The skills script always runs; the documents need Flask's sdist from PyPI (cached in
    bench/.corpus after the first run) and are skipped, with the reason, without it."""
    result = docs.run(quick=True)
    skills = result.skills
    assert skills is not None and [framing for _, _, framing in skills.framing] == [8, 10, 12]
    assert [(requests, carried) for _, requests, carried in skills.phases] == [(3, 0), (4, 4), (3, 0)]
    assert skills.breaks == ["skill pdf-forms was turned on", "skill pdf-forms was turned off"]
    assert skills.tool_body_in_result and skills.tool_breaks == 0
    lines = run.docs_md(result)
    assert lines[0].startswith("**12. Instructions, skills and documents**")
    if result.skipped is not None:
        pytest.skip(f"the documents part could not run: {result.skipped}")
    [flask] = result.corpora
    assert len(flask.asked) == 5 and flask.files > 70 and flask.answered >= 4
    assert flask.off_topic_clean >= 45 and all(a.tokens <= docs.BUDGET // 10 for a in flask.asked)
    assert any(line.startswith("| Flask's docs |") for line in lines)


def test_every_question_names_lines_that_exist_in_its_file() -> None:
    """The questions' spans are within their files (the published sdist, when it is cached)."""
    folder = docs.FLASK.folder
    if not folder.is_dir():
        pytest.skip("Flask's sdist is not in bench/.corpus (python -m bench.docs fetches it)")
    assert len(docs.QUESTIONS) >= 40 and len(docs.OFF_TOPIC) == 50
    for question, spans in docs.QUESTIONS:
        for path, first, last in spans:
            lines = (folder / path).read_text(encoding="utf-8").splitlines()
            assert 1 <= first <= last <= len(lines), (question, path)


def test_memory_child_reports_its_own_numbers() -> None:
    result = memory.run(50, exact=False)
    assert result.messages == 50 and result.chars > 50
    assert result.peak_kib >= result.before_kib > 0


def test_results_go_between_the_markers_and_replace_the_previous_ones(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\nprose\n\n{run.PLACEHOLDER}\n\nafter\n", encoding="utf-8")
    run.write_results(readme, "first table\n")
    run.write_results(readme, "second table\n")
    text = readme.read_text(encoding="utf-8")
    assert "second table" in text and "first table" not in text and run.PLACEHOLDER not in text
    assert text.startswith("# x\n\nprose\n\n" + run.BEGIN) and text.endswith(run.END + "\n\nafter\n")


@pytest.mark.gateway
@pytest.mark.timeout(600)
@pytest.mark.skipif(gateway.available() is not None, reason=f"the gateway bench {gateway.available()}")
def test_gateway_reads_each_turns_cache_from_the_replica_that_answered() -> None:
    result = gateway.run(quick=True)
    assert result.skipped is None and result.litellm_version
    spread, sticky = result.runs
    assert (spread.group, sticky.group) == gateway.GROUPS
    for group in result.runs:
        assert len(group.turns) == gateway.QUICK_TURNS
        assert group.turns[0].cached == 0  # every replica starts cold
        assert all(t.replica in (1, 2) and 0 <= t.cached <= t.prompt for t in group.turns)
        assert [t.prompt for t in group.turns] == sorted({t.prompt for t in group.turns})  # the history grows
    # Sticky: one replica answers every turn, and each turn reuses at least the whole previous prompt.
    assert len({t.replica for t in sticky.turns}) == 1
    for before, after in zip(sticky.turns, sticky.turns[1:], strict=False):
        assert after.cached >= before.prompt
    lines = run.gateway_md(result)
    assert lines[0].startswith("**6. Behind a gateway**")
    rows = [line for line in lines if line.startswith("| ")]
    assert len(rows) == 2 + gateway.QUICK_TURNS + 1  # head, rule, turns, "all"


def test_gateway_part_says_why_it_was_not_run() -> None:
    lines = run.gateway_md(gateway.GatewayResult([], skipped="needs the gateway extra"))
    assert lines == ["**6. Behind a gateway**: not measured this run; it needs the gateway extra."]


def test_only_some_parts_replace_their_tables_and_keep_the_others(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    old = ("Measured then on a machine.\n\n**1. One-shot** (x)\n\n| a |\n\nafter 1\n\n"
           "**5. Memory** (y)\n\n| b |\n")
    readme.write_text(f"# x\n\n{run.BEGIN}\n{old}{run.END}\n\nafter\n", encoding="utf-8")
    head, parts = run.split_parts(run.read_block(readme))
    assert head == ["Measured then on a machine."]
    assert parts == {1: ["**1. One-shot** (x)", "", "| a |", "", "after 1"],
                     5: ["**5. Memory** (y)", "", "| b |"]}
    parts[6] = ["**6. Behind a gateway** (z)", "", "| c |"]
    parts[1] = ["**1. One-shot** (new)"]
    run.write_results(readme, run.join_parts(head, parts))
    block = run.read_block(readme)
    assert block == ("Measured then on a machine.\n\n**1. One-shot** (new)\n\n**5. Memory** (y)\n\n| b |\n\n"
                     "**6. Behind a gateway** (z)\n\n| c |\n")
    assert readme.read_text(encoding="utf-8").endswith(run.END + "\n\nafter\n")


def test_the_results_block_of_docs_benchmarks_splits_into_its_parts_and_joins_back_unchanged() -> None:
    block = run.read_block(run.RESULTS)
    head, parts = run.split_parts(block)
    assert head and head[0].startswith("Measured ")
    assert set(parts) >= {1, 2, 3, 4, 5}
    assert run.join_parts(head, parts) == block


def test_live_view_is_a_screenful_that_reopens_the_code_fence() -> None:
    with open(os.devnull, "w", encoding="utf-8") as null:
        # No colours: drawn in the environment's colour system, the code block's styles would keep those
        # escape codes for every later console of the process (see the test above)
        console = Console(file=null, force_terminal=True, width=80, height=25, color_system=None)
        with ReplyStream(console) as reply:
            reply.feed("intro\n\n```python\n")
            for i in range(500):
                reply.feed(f"x{i} = {i}\n")
            view = reply._visible()
            assert view.startswith("```python\n")
            assert view.endswith("x499 = 499\n")
            assert view.count("\n") <= 25


def finished_blocks(text: str) -> int:
    """Return the length of the prefix of ``text`` made of finished Markdown blocks.

    A block is finished at a blank line that is not inside a fenced code block;
    finished blocks never change as more text arrives, so they can be printed once.
    """
    end = 0
    inside_fence = False
    position = 0
    for line in text.splitlines(keepends=True):
        position += len(line)
        if render._FENCE.match(line):
            inside_fence = not inside_fence
        elif not inside_fence and not line.strip() and line.endswith("\n"):
            end = position
    return end


class _FullScan(ReplyStream):
    """The reference: rescan the whole unfinished tail on every chunk (the old, quadratic way)."""

    def _scan(self) -> int:
        return finished_blocks(self._tail)


def test_incremental_block_scan_prints_what_a_full_rescan_prints() -> None:
    doc = ("# Title\n\nSome *text* here\nmore text.\n\n```python\nx = 1\n\ny = 2\n```\n\n- a\n- b\n\n"
           "~~~\ncode\n~~~\nafter fence\n\n   \n\nlast para")

    def output(kind: type[ReplyStream], chunks: list[str]) -> str:
        buffer = io.StringIO()
        console = Console(file=buffer, width=60, force_terminal=False, color_system=None)
        with kind(console) as reply:
            for chunk in chunks:
                reply.feed(chunk)
        return buffer.getvalue()

    rnd = random.Random(3)
    for _ in range(60):
        cuts = sorted(rnd.sample(range(1, len(doc)), rnd.randint(1, 25)))
        chunks = [doc[a:b] for a, b in zip([0, *cuts], [*cuts, len(doc)], strict=True)]
        printed = output(ReplyStream, chunks)
        assert printed == output(_FullScan, chunks)
        assert "x = 1" in printed and "last para" in printed


def test_standing_part_measures_the_set_and_runs_the_chat(tmp_path: Path) -> None:
    rows = standing.set_rows()
    assert [r.name for r in rows][-1] == "all" and rows[-1].standing + rows[-1].not_standing >= 150
    assert rows[-1].precision >= 0.9 and rows[-1].recall >= 0.9
    assert standing.speed(["I'm vegetarian. Is it always cold?"], passes=1) > 0
    chat = standing.run_chat("default", memory="auto", recall="auto", directory=tmp_path, turns=30)
    assert chat.notes == 4 and chat.filler_noted == 0 and chat.false_notes == ()  # turns 2, 9, 17, 25
    assert chat.largest <= standing.BUDGET_CHAT and chat.sent > 0
    lines = run.standing_md(rows, 1e-5, 1e-5, 30, [chat], 30)
    text = "\n".join(lines)
    assert lines[0].startswith("**9. Standing memory**") and "| fifth round | 30 / 30 |" in text
    assert "| default | 0/0 | 4 | 0 (0.0%) |" in text


def test_tools_part_measures_a_big_result_and_a_one_shot_with_servers(server: FakeServer) -> None:
    from bench import tools

    [words, letter] = tools.run_big(2, repeat=1)
    assert (words.kind, letter.kind) == ("words", "letter")
    assert all(r.wall > 0 and r.cpu > 0 and r.rss_after >= r.rss_before and 0 < r.kept < 20_000
               for r in (words, letter))
    idle = tools.run_idle(server.url, runs=1, servers=2)
    assert [r.name for r in idle] == ["2 servers configured (not called)", "--no-tools"]
    assert all(r.wall > 0 and r.cpu > 0 for r in idle)
    lines = run.tools_md([words, letter], idle, 1)
    assert any("2 MB of words" in line for line in lines)


def test_the_log_bench_measures_writes_size_and_reading_back() -> None:
    from bench import log
    from bench.run import log_md

    result = log.run((20, 60))
    assert [m.turns for m in result.marks] == [20, 60]
    assert all(m.bytes_per_turn > 0 and m.text_per_turn > 1_000 and m.write_ms > 0 for m in result.marks)
    assert result.marks[-1].log_bytes > result.marks[-1].text_bytes  # the text, its index, the turns
    assert result.restore_ms > 0 and result.list_ms > 0 and result.search_ms > 0
    table = "\n".join(log_md(result))
    assert table.startswith("**13. The log** (60 turns") and "| 60 | 120 |" in table
