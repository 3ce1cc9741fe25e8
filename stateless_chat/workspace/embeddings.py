"""Searching the documents by meaning: vectors from the endpoint's ``/v1/embeddings``, fused with bm25.

With ``embedding_model`` set, every chunk of the chat's documents gets a vector from that model
(through ``transport.OpenAIBackend.embed``, the chat's first endpoint, batches of ``BATCH``), and
before each turn the new message gets one too. The chunks most similar to it (cosine) form a second
ranking beside bm25's, and the two are fused by reciprocal rank (``RRF_K``): a chunk's score is
the sum of ``1 / (RRF_K + rank)`` over the rankings it is in. Only chunks above bm25's floor, or
whose similarity stands out from the rest (``STAND_OUT`` standard deviations above the mean over the
chat's chunks, a rule that does not depend on the model's scale), can be retrieved: a message about
nothing in the documents still retrieves nothing.

The vector store is the documents' SQLite file itself: a ``vectors`` table of float32 BLOBs (length
1), one per chunk and model, deleted with its chunk. The search is exact, a dot product with every
vector of the chat's chunks, held in memory once read (numpy when it is importable, which
llama-cpp-python brings, else plain Python). A chat's documents are thousands to tens of thousands of
chunks: a scan costs milliseconds, needs no second store to keep in step with the chunks, and no
dependency or SQLite extension (sqlite-vec, FAISS, hnswlib) for an approximate index it would not
need.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

BATCH = 32  # chunks embedded in one request
RRF_K = 60  # reciprocal rank fusion's constant (Cormack et al., 2009)
STAND_OUT = 3.0  # standard deviations above the mean similarity a chunk needs to count on its own

Embed = Callable[[Sequence[str]], list[list[float]]]


def pack(vector: Sequence[float]) -> bytes:
    """Return ``vector`` scaled to length 1 as float32 bytes (a zero vector stays zero)."""
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return array("f", (x / norm for x in vector)).tobytes()


def unpack(blob: bytes) -> array[float]:
    values = array("f")
    values.frombytes(blob)
    return values


@dataclass(frozen=True)
class Ranking:
    """Chunks by similarity to a query, best first, and what stands out among them."""

    order: tuple[tuple[int, float], ...]  # (chunk id, cosine similarity)
    mean: float
    spread: float  # the standard deviation

    def stands_out(self, similarity: float) -> bool:
        return self.spread > 0 and similarity >= self.mean + STAND_OUT * self.spread


class VectorIndex:
    """The vectors of a chat's chunks from one model, in memory, searched exactly."""

    def __init__(self, rows: Sequence[tuple[int, bytes]]) -> None:
        self.ids = [chunk for chunk, _ in rows]
        self._matrix: Any = None
        self._rows: list[array[float]] = []
        try:
            import numpy

            if rows:
                self._matrix = numpy.frombuffer(b"".join(blob for _, blob in rows), dtype=numpy.float32)
                self._matrix = self._matrix.reshape(len(rows), -1)
        except ImportError:  # pragma: no cover - numpy comes with the local extra
            self._rows = [unpack(blob) for _, blob in rows]

    def __len__(self) -> int:
        return len(self.ids)

    def rank(self, query: Sequence[float], limit: int) -> Ranking:
        """Return the ``limit`` chunks most similar to ``query`` and the similarities' mean and spread."""
        if not self.ids:
            return Ranking((), 0.0, 0.0)
        unit = unpack(pack(query))
        if self._matrix is not None:
            import numpy

            if self._matrix.shape[1] != len(unit):
                return Ranking((), 0.0, 0.0)  # vectors of another size: a model changed under a name
            scores = self._matrix @ numpy.asarray(unit, dtype=numpy.float32)
            best = numpy.argsort(-scores)[:limit]
            order = tuple((self.ids[int(i)], float(scores[int(i)])) for i in best)
            return Ranking(order, float(scores.mean()), float(scores.std()))
        sims = [sum(a * b for a, b in zip(row, unit, strict=False)) for row in self._rows]
        mean = sum(sims) / len(sims)
        spread = math.sqrt(sum((s - mean) ** 2 for s in sims) / len(sims))
        ranked = sorted(range(len(sims)), key=lambda i: -sims[i])[:limit]
        return Ranking(tuple((self.ids[i], sims[i]) for i in ranked), mean, spread)


def fuse(*rankings: Sequence[int]) -> dict[int, float]:
    """Return each chunk's reciprocal-rank score over ``rankings`` (chunk ids, best first)."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, chunk in enumerate(ranking, start=1):
            scores[chunk] = scores.get(chunk, 0.0) + 1.0 / (RRF_K + rank)
    return scores


__all__ = ["BATCH", "Embed", "Ranking", "VectorIndex", "fuse", "pack", "unpack"]
