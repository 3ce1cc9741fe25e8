"""What auto recall counts as a reason to bring an evicted turn back (``core/relevance``, the journal's
``_lacking``): the words a message needs and the request lacks, named or shared twice, and never a copy
of the message itself. Unit tests of the rules, then through the session, the real openai client, the
fake server and a real log file."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

from stateless_chat.chat.session import Session
from stateless_chat.core.messages import Recalled
from stateless_chat.core.relevance import names, no_reason, sentences
from tests.fakeserver import FakeServer, content_text
from tests.support import attach_journal, make_session


def test_sentences_are_split_at_their_ends_and_lowered() -> None:
    assert sentences("Is it windy? Tell me more.\nThanks!") == [
        ("is", "it", "windy"), ("tell", "me", "more"), ("thanks",)]


def test_names_are_capitals_past_a_sentences_start_words_with_digits_and_what_the_user_calls_theirs() -> None:
    assert names("Where does Priya live? Is heron-42 the password?") == {"priya", "42"}
    assert names("Write a note for my wife and our daughter's teacher.") == {"wife", "daughter"}
    assert names("Bread is great. Tell me about bread.") == set()  # a sentence's first word is not a name


def test_a_message_that_holds_the_new_messages_sentence_word_for_word_is_no_reason() -> None:
    text = "Is it always this windy on the coast? Tell me about tides and currents."
    terms = ["always", "windy", "coast", "tides", "currents"]
    test = no_reason(text, terms)
    assert test("Is it always this windy on the coast? I wondered about gulls.")  # a copy of one sentence
    assert not test("The coast is windy in March, always.")  # the same words in another sentence
    assert not test("Is it always this windy on the coast? Tides and currents meet there.")  # two of its own


def test_one_shared_word_is_a_reason_only_when_it_names_something() -> None:
    assert no_reason("Any tips for bread?", ["tips", "bread"])("I baked bread yesterday.")
    assert not no_reason("Tips for bread and crust?", ["tips", "bread", "crust"])("Bread with a dark crust.")
    assert not no_reason("Where does Priya live?", ["priya", "live"])("Priya prefers oolong.")
    assert not no_reason("Write a note for my wife.", ["write", "note", "wife"])("My wife is Ana.")
    assert not no_reason("Is the code 7491?", ["code", "7491"])("The launch number: 7491.")


def test_one_word_is_enough_when_the_message_asks_about_what_was_said_before() -> None:
    assert no_reason("Any kubernetes tips?", ["kubernetes", "tips"])("We run kubernetes at work.")
    asked = no_reason("What did we decide about kubernetes?", ["decide", "kubernetes"])
    assert not asked("We run kubernetes at work.")
    assert not no_reason("Remember the bread?", ["bread"])("I baked bread yesterday.")


def filler(n: int) -> str:
    """A turn of everyday talk that shares no word with the facts of the tests below."""
    topics = ["weather", "music", "trains", "gardens", "tides", "bridges", "castles", "pottery", "chess",
              "kites", "lanterns", "orchards", "harbours", "glaciers", "deserts", "rivers", "canals", "lakes"]
    return f"Tell me about {topics[n % len(topics)]} {n}: " + f"{topics[n % len(topics)]} " * 30


@contextmanager
def first_said_then_evicted(server: FakeServer, tmp_path: Path, first: str) -> Iterator[Session]:
    """Yield a session (budget 600, auto recall, memory off) logging to a real file in ``tmp_path``,
    whose turn 1 said ``first`` and was then evicted by filler; the log is closed after."""
    session = make_session(server, budget=600, reply_reserve=100, recall="auto", memory="off", evict_to=1.0)
    log = attach_journal(session, tmp_path / "logs.db")
    session.send(first)
    n = 0
    while session.conversation.is_live(1):
        n += 1
        session.send(filler(n))
    try:
        yield session
    finally:
        log.close()


def recalled_turns(session: Session, text: str) -> set[int]:
    """Send ``text`` and return the turns auto recall brought back for it."""
    events: list[object] = []
    session.hooks = replace(session.hooks, on_event=events.append)
    session.send(text)
    return {e.turn for e in events if isinstance(e, Recalled)}


def answers(body: dict[str, Any]) -> str:
    """Answer the wifi question with the password, anything else with a short line."""
    last = content_text(body["messages"][-1].get("content"))
    return "The password of the cabin wifi is heron-42." if "wifi" in last else "Noted, thanks."


def test_a_question_asked_again_word_for_word_brings_back_the_answer_not_only_its_copy(
    server: FakeServer, tmp_path: Path,
) -> None:
    server.replier = answers
    asked = "What is the wifi password at the cabin?"
    with first_said_then_evicted(server, tmp_path, asked) as session:
        assert recalled_turns(session, asked) == {1}  # through its answer
        assert "heron-42" in str(server.requests[-1]["messages"][:-1])


def test_a_sentence_repeated_word_for_word_does_not_bring_its_old_copy_back(server: FakeServer,
                                                                            tmp_path: Path) -> None:
    said = "Walk me through how Venetian glass blowers shape a goblet stem."
    with first_said_then_evicted(server, tmp_path, said) as session:
        assert recalled_turns(session, said) == set()
        assert sum(said in str(m) for m in server.requests[-1]["messages"]) == 1  # only the new message


def test_one_common_word_in_common_brings_nothing_back_but_my_wife_does(server: FakeServer,
                                                                         tmp_path: Path) -> None:
    said = "My wife Ana grows tulips, and I baked sourdough bread yesterday."
    with first_said_then_evicted(server, tmp_path, said) as session:
        assert recalled_turns(session, "Any quick ideas for bread?") == set()
        assert recalled_turns(session, "Write a birthday note for my wife.") == {1}
        assert "Ana" in str(server.requests[-1]["messages"][:-1])


def test_asked_about_what_was_said_before_one_shared_word_brings_the_turn_back(server: FakeServer,
                                                                               tmp_path: Path) -> None:
    settled = "We settled it: staging moves to kubernetes in the spring, production stays on VMs."
    with first_said_then_evicted(server, tmp_path, settled) as session:
        assert recalled_turns(session, "Any good kubernetes books?") == set()
        session.drop([session.conversation.history[-2].id])  # its words would be in the window now
        assert recalled_turns(session, "What did we decide about kubernetes?") == {1}
        assert "production stays on VMs" in str(server.requests[-1]["messages"][:-1])


def test_words_the_request_already_carries_are_not_looked_for(server: FakeServer, tmp_path: Path) -> None:
    """Recall looks for what the request lacks: a turn that only shares words the window still holds
    is not brought back (its context is there); the same question once the window lost them is."""

    def replier(body: dict[str, Any]) -> str:
        last = content_text(body["messages"][-1].get("content"))
        return "Ferry timetable talk: boats, boats, boats." if "recommend" in last else f"echo: {last}"

    server.replier = replier
    said = "The ferry timetable changes in May: the first boat leaves at 6:10."
    with first_said_then_evicted(server, tmp_path, said) as session:
        assert recalled_turns(session, "What do you recommend?") == set()  # its reply carries the words
        carried = session.conversation.history[-2].id
        assert recalled_turns(session, "When does the ferry timetable change?") == set()
        asked = session.conversation.history[-2].id
        session.drop([carried, asked])  # what the user removes comes back only when asked for by number
        assert recalled_turns(session, "When does the ferry timetable change?") == {1}
        assert "6:10" in str(server.requests[-1]["messages"][:-1])
