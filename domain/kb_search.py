"""Knowledge-base full-text search: an in-memory inverted index ranked with BM25F.

Pure: no IO, no clock, no threads. The KB service feeds it the searchable version of each
article (`upsert`) and asks it questions (`search`, `suggest`); it rebuilds it from storage
at start. It is not thread-safe: call it from one thread (a Serve replica's event loop).

How text becomes terms (`analyse`), the same for articles and queries:
  1. Markdown syntax is stripped (articles only), the text is NFC-normalised;
  2. every character is folded one-for-one (lowercase, accents stripped: "Bónus" -> "bonus"),
     so offsets in the folded text are offsets in the original (snippets mark the original);
  3. words are runs of Unicode letters and digits ("kyc", "2fa", "p1", "2024" survive; "_",
     "-", "'" split);
  4. each word is fully folded (NFKD without combining marks, casefold, "ß" -> "ss", "ø" -> "o",
     "æ" -> "ae"...), dropped if it is a stop word of the article's language (English and German
     lists here), and for English reduced by a light suffix stemmer (plurals, -ing, -ed, final e).

The index keeps one partition per language: its own stop words, stemmer, vocabulary and
term statistics (IDF is per language). A query with a language searches that partition only;
without one it is analysed once per partition and the hits are merged by score.

Ranking is BM25F: per term, tf~ = sum over fields of weight_f * tf_f / (1 - b + b * len_f / avg_len_f)
with title > tags > body, score += idf * tf~ * (k1 + 1) / (tf~ + k1), idf = ln(1 + (N - df + 0.5) / (df + 0.5))
(always positive, so a hit always holds a query term). The best `rerank_window` hits of a
multi-word query are then boosted by (1 + phrase_boost) when the query's words appear
consecutively in the title or body (a stop word of the query matches any stop word there). Ties break by indexing order.

Filters (language, category, published-only for the public audience) are applied inside the
postings: each term's postings are cut by a per-document eligibility mask before scoring.

Replacing or removing an article marks its old slot dead (its postings stay, masked out, and
no longer count in N, df or average lengths); a partition is compacted when dead slots
outnumber half the live ones.
"""

from __future__ import annotations

import bisect
import html
import math
import re
import unicodedata
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any
from uuid import UUID

import numpy as np
from numpy.typing import NDArray

from schemas.kb import ArticleDoc, ArticleStatus, Audience, KbStats, SearchHit, SearchQuery

Ids = NDArray[np.int32]
Floats = NDArray[np.float64]
Mask = NDArray[np.bool_]

# ----------------------------------------------------------------------------- analysis

_WORD = re.compile(r"[^\W_]+")
# Letters NFKD leaves alone, folded as a reader of those languages would type them on a US keyboard.
_SPECIAL_1 = {"ø": "o", "ł": "l", "đ": "d", "ħ": "h", "\u0131": "i", "ŧ": "t", "ð": "d"}
_SPECIAL_N = str.maketrans({"æ": "ae", "œ": "oe", "þ": "th", **_SPECIAL_1})
# One-for-one fold of the non-ASCII characters met so far (after str.lower()).
_FOLD1: dict[str, str] = {}


def _fold_char(c: str) -> str:
    base = "".join(ch for ch in unicodedata.normalize("NFKD", c) if not unicodedata.combining(ch)).lower()
    base = _SPECIAL_1.get(base, base)
    lower = c.lower()
    is_word = _WORD.fullmatch(c) is not None
    for candidate in (base, lower):
        # One character in, one out, and a letter stays a letter: offsets and word edges are kept.
        if len(candidate) == 1 and (_WORD.fullmatch(candidate) is not None) == is_word:
            return candidate
    return c


def fold_text(text: str) -> str:
    """Lowercase and strip accents, one character for one (offsets are preserved)."""
    # str.lower() keeps the length of everything but U+0130 (it becomes "i" + a combining dot);
    # then each distinct non-ASCII character is replaced in one C-speed pass.
    folded = text.replace("\u0130", "I").lower()
    if folded.isascii():
        return folded
    for c in [c for c in set(folded) if c > "\x7f"]:
        f = _FOLD1.get(c)
        if f is None:
            f = _FOLD1[c] = _fold_char(c)
        if f != c:
            folded = folded.replace(c, f)
    return folded if len(folded) == len(text) else text.lower() if len(text.lower()) == len(text) else text


def _fold_word(word: str) -> str:
    """The full fold of a one-for-one folded word (may change its length: "straße" -> "strasse")."""
    if word.isascii():
        return word
    s = "".join(ch for ch in unicodedata.normalize("NFKD", word) if not unicodedata.combining(ch))
    return "".join(_WORD.findall(s.casefold().translate(_SPECIAL_N)))


def words(text: str) -> list[str]:
    """The one-for-one folded words of a text, in order."""
    return _WORD.findall(fold_text(unicodedata.normalize("NFC", text)))


# Written for this module (not copied): the commonest function words, folded like the text.
_EN_STOP = """
a an the and or but if then else of to in on at by for with from into onto over under about as
is are was were be been being am do does did doing have has had having i me my we our ours you your
he him his she her it its they them their this that these those what which who whom whose where when
why how not no nor so than too very can could will would shall should may might must just only also
there here s t d ll m re ve up down out off again further once all any both each few more most other
some such own same until while because through during before after above below between against
"""
_DE_STOP = """
der die das den dem des ein eine einer eines einem einen und oder aber doch nicht kein keine keinen
ist sind war waren wird werden wurde wurden hat haben hatte hatten bin bist sein seine seinen ihre ihren
ich du er sie es wir ihr mein meine dein deine unser euer zu zum zur von vom mit für über unter auf aus
bei nach vor in im an am als auch noch nur so wie was wer wo wenn dann dass daß da denn weil ob um bis
durch gegen ohne sich man mich dich mir dir ihm ihn ihnen uns euch diese dieser dieses diesen diesem
jede jeder jedes alle allen sehr schon hier dort mehr kann können muss müssen soll sollte will etwa ja
nein hin her wieder
"""
STOP_WORDS: dict[str, frozenset[str]] = {
    lang: frozenset(_fold_word(w) for w in words(text)) for lang, text in (("en", _EN_STOP), ("de", _DE_STOP))
}

_VOWELS = frozenset("aeiouy")


def stem_en(word: str) -> str:
    """A light English suffix stripper: plurals, -ing, -ed, then a final e ("games", "gaming",
    "game" -> "gam"; "verified" -> "verify"; "betting" -> "bet"). Words with digits are kept."""
    if len(word) <= 3 or not (word.isascii() and word.isalpha()):
        return word
    w = word
    if w.endswith("ies") and len(w) > 4:
        w = w[:-3] + "y"
    elif w.endswith("sses"):
        w = w[:-2]
    elif w.endswith("s") and not w.endswith(("ss", "us", "is")):
        w = w[:-1]
    for suffix in ("ing", "ed"):
        if not w.endswith(suffix) or w.endswith("eed"):
            continue
        base = w[: -len(suffix)]
        if len(base) >= 3 and not _VOWELS.isdisjoint(base):
            if suffix == "ed" and base.endswith("i"):
                base = base[:-1] + "y"
            elif base[-1] == base[-2] and base[-1] not in _VOWELS and base[-1] not in "lsz":
                base = base[:-1]
            w = base
        break
    if len(w) > 3 and w.endswith("e"):
        w = w[:-1]
    return w


class Analyzer:
    """Word -> term for one language (None for a stop word)."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.stop = STOP_WORDS.get(language, frozenset())
        self.stem = language == "en"

    def term(self, word: str) -> str | None:
        full = _fold_word(word)
        if not full or full in self.stop:
            return None
        return stem_en(full) if self.stem else full


def analyse(text: str, language: str) -> list[str]:
    """The terms of a text as the index sees them (stop words dropped), in order."""
    analyzer = Analyzer(language)
    return [t for t in (analyzer.term(w) for w in words(text)) if t is not None]


# (characters that must be present for the rule to apply, pattern, replacement): a rule is
# skipped when none of its characters is in the text (most bodies are mostly prose).
_MARKDOWN: list[tuple[str, re.Pattern[str], str]] = [
    ("`~", re.compile(r"^\s*(```|~~~).*$", re.M), " "),  # code fences (the code itself stays searchable)
    ("[", re.compile(r"!?\[([^\]\n]*)\]\([^)\n]*\)"), r"\1"),  # links and images: their text
    ("[", re.compile(r"^\s{0,3}\[[^\]]+\]:\s*\S.*$", re.M), " "),  # reference definitions
    ("<", re.compile(r"</?[A-Za-z!][^<>\n]{0,300}>"), " "),  # HTML tags and autolinks
    ("-*_", re.compile(r"^\s{0,3}(?:[-*_]\s*){3,}$", re.M), " "),  # rules
    ("#>-*+.)", re.compile(r"^\s{0,3}(?:#{1,6}|>+|[-*+]|\d{1,9}[.)])[ \t]+", re.M), ""),  # headings, lists
    ("\\", re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~])"), r"\1"),  # escapes
    ("*`~", re.compile(r"[*`~]+"), ""),  # emphasis, code spans
    ("_", re.compile(r"(?<![^\W_])_+|_+(?![^\W_])"), ""),  # emphasis with _ (not snake_case)
    ("|", re.compile(r"\|"), " "),  # tables
]


def strip_markdown(text: str) -> str:
    """Plain text of a Markdown body, whitespace collapsed: what is indexed and shown in snippets."""
    for trigger, pattern, repl in _MARKDOWN:
        if any(c in text for c in trigger):
            text = pattern.sub(repl, text)
    return unicodedata.normalize("NFC", " ".join(text.split()))


# ----------------------------------------------------------------------------- parameters


@dataclass(frozen=True, slots=True)
class Bm25Params:
    k1: float = 1.2
    b: float = 0.75
    title_weight: float = 3.0
    tags_weight: float = 2.0
    body_weight: float = 1.0
    phrase_boost: float = 1.0  # a multi-word query found as a phrase: score * (1 + phrase_boost)
    rerank_window: int = 100  # best BM25 hits checked for the phrase
    prefix_expansions: int = 30  # as-you-type: most frequent terms the last word may stand for
    snippet_chars: int = 200
    suggest_terms: int = 12  # most informative ticket terms searched by suggest()
    suggest_chars: int = 20_000  # of a ticket's text, the part analysed by suggest()


# ----------------------------------------------------------------------------- one language


class _Postings:
    """The documents holding one term, in slot order: slot and tf in title, tags, body."""

    __slots__ = ("df", "slots", "snapshot", "tf")

    def __init__(self) -> None:
        self.slots = array("i")
        self.tf = array("H")  # title, tags, body of each posting in turn (two arrays a term: the vocabulary is large)
        self.df = 0  # live documents only
        self.snapshot: tuple[Ids, NDArray[np.float32]] | None = None

    def arrays(self) -> tuple[Ids, NDArray[np.float32]]:
        """Slots and a (3, n) float tf matrix; rebuilt after the postings changed."""
        if self.snapshot is None:
            tf = np.frombuffer(self.tf, np.uint16).reshape(-1, 3).T.astype(np.float32)
            self.snapshot = (np.frombuffer(self.slots, np.int32).copy(), tf)
        return self.snapshot


@dataclass(slots=True)
class _Stored:
    article_id: UUID
    version: int
    title: str
    category: str
    status: ArticleStatus
    text: str  # the body as plain text (what snippets quote)
    title_seq: Ids  # term ids in order, -1 for stop words: phrases, and the terms to unindex
    tags_ids: Ids
    body_seq: Ids


class _Shard:
    """The index of one language."""

    def __init__(self, language: str) -> None:
        self.language = language
        self.analyzer = Analyzer(language)
        self.vocab: dict[str, int] = {}
        self.terms: list[str] = []
        self.postings: list[_Postings] = []
        self.word_ids: dict[str, int] = {}  # one-for-one folded word -> term id, -1 for a stop word
        self.surfaces: dict[int, set[str]] = {}  # term id -> the words that became it, when they differ
        self.docs: list[_Stored | None] = []
        cap = 64
        self.alive = np.zeros(cap, np.bool_)
        self.published = np.zeros(cap, np.bool_)
        self.category = np.zeros(cap, np.int32)
        self.lengths = np.zeros((3, cap), np.int32)
        self.n_alive = 0
        self.length_sums = [0, 0, 0]
        self.generation = 0
        self._norms: tuple[int, Bm25Params, NDArray[np.float32]] | None = None
        self._prefix: tuple[int, list[str], list[int]] | None = None
        self._regex: dict[tuple[int, ...], re.Pattern[str]] = {}

    @property
    def n_slots(self) -> int:
        return len(self.docs)

    # -- words to terms

    def _intern(self, word: str) -> int:
        term = self.analyzer.term(word)
        if term is None:
            tid = -1
        else:
            tid = self.vocab.get(term, -1)
            if tid < 0:
                tid = len(self.terms)
                self.vocab[term] = tid
                self.terms.append(term)
                self.postings.append(_Postings())
            if term != word:
                self.surfaces.setdefault(tid, set()).add(word)
        self.word_ids[word] = tid
        return tid

    def _index_ids(self, ws: Iterable[str]) -> Ids:
        """Term ids in order, -1 for each stop word (kept so a phrase cannot jump over one)."""
        get, intern = self.word_ids.get, self._intern
        ids = [tid if (tid := get(w)) is not None else intern(w) for w in ws]
        return np.fromiter(ids, np.int32, len(ids)) if ids else np.empty(0, np.int32)

    def lookup(self, word: str) -> int | None:
        """The term id of a query word, without growing the vocabulary."""
        tid = self.word_ids.get(word)
        if tid is None:
            term = self.analyzer.term(word)
            tid = -1 if term is None else self.vocab.get(term, -1)
        return tid if tid >= 0 else None

    # -- writes

    def add(self, doc: ArticleDoc, category_id: int, text: str) -> int:
        title_seq = self._index_ids(words(doc.title))
        tags_ids = self._index_ids(w for tag in doc.tags for w in words(tag))
        tags_ids = tags_ids[tags_ids >= 0]
        body_seq = self._index_ids(words(text))
        fields = (title_seq[title_seq >= 0], tags_ids, body_seq[body_seq >= 0])
        uniq = np.unique(np.concatenate(fields))
        counts = np.minimum(
            np.stack([np.bincount(np.searchsorted(uniq, f), minlength=len(uniq)) for f in fields], axis=1), 65535)
        slot = self.n_slots
        self._grow(slot + 1)
        postings = self.postings
        for tid, tf in zip(uniq.tolist(), counts.tolist(), strict=True):
            p = postings[tid]
            p.slots.append(slot)
            p.tf.extend(tf)
            p.df += 1
            p.snapshot = None
        self.docs.append(_Stored(doc.article_id, doc.version, doc.title, doc.category, doc.status, text,
                                 title_seq, tags_ids, body_seq))
        self.alive[slot] = True
        self.published[slot] = doc.status == "published"
        self.category[slot] = category_id
        for f, seq in enumerate(fields):
            self.lengths[f, slot] = len(seq)
            self.length_sums[f] += len(seq)
        self.n_alive += 1
        self.generation += 1
        return slot

    def _grow(self, need: int) -> None:
        cap = len(self.alive)
        if need <= cap:
            return
        cap = max(need, cap * 2)
        self.alive = _pad(self.alive, cap)
        self.published = _pad(self.published, cap)
        self.category = _pad(self.category, cap)
        self.lengths = _pad(self.lengths, cap)

    def kill(self, slot: int) -> None:
        stored = self.docs[slot]
        assert stored is not None and self.alive[slot]
        terms = np.unique(np.concatenate((stored.title_seq, stored.tags_ids, stored.body_seq)))
        for tid in terms[terms >= 0].tolist():
            self.postings[tid].df -= 1
        for f in range(3):
            self.length_sums[f] -= int(self.lengths[f, slot])
        self.alive[slot] = False
        self.docs[slot] = None
        self.n_alive -= 1
        self.generation += 1

    def needs_compaction(self) -> bool:
        dead = self.n_slots - self.n_alive
        return dead >= 256 and dead > self.n_alive // 2

    def compact(self) -> dict[UUID, int]:
        """Drop dead slots from every posting; returns the new slot of each live article."""
        n = self.n_slots
        alive = self.alive[:n].copy()
        remap = np.full(n, -1, np.int32)
        remap[alive] = np.arange(int(alive.sum()), dtype=np.int32)
        for p in self.postings:
            slots = np.frombuffer(p.slots, np.int32)
            keep = alive[slots]
            tf = np.frombuffer(p.tf, np.uint16).reshape(-1, 3)[keep]
            new_slots = remap[slots[keep]]
            del slots
            p.slots = array("i", new_slots.astype(np.int32).tobytes())
            p.tf = array("H", tf.tobytes())
            p.snapshot = None
        self.docs = [d for d in self.docs if d is not None]
        m = len(self.docs)
        self.published = self.published[:n][alive]
        self.category = self.category[:n][alive]
        self.lengths = self.lengths[:, :n][:, alive]
        self.alive = np.ones(m, np.bool_)
        self._grow(max(m, 64))
        self.generation += 1
        return {d.article_id: i for i, d in enumerate(self.docs) if d is not None}

    # -- reads

    def eligible(self, published_only: bool, category_id: int | None) -> Mask:
        n = self.n_slots
        mask = self.alive[:n].copy()
        if published_only:
            mask &= self.published[:n]
        if category_id is not None:
            mask &= self.category[:n] == category_id
        return mask

    def norms(self, params: Bm25Params) -> NDArray[np.float32]:
        """Per slot and field: weight_f / (1 - b + b * len_f / avg_len_f)."""
        cached = self._norms
        if cached is not None and cached[0] == self.generation and cached[1] == params:
            return cached[2]
        n = self.n_slots
        out = np.zeros((3, n), np.float32)
        weights = (params.title_weight, params.tags_weight, params.body_weight)
        for f in range(3):
            avg = self.length_sums[f] / self.n_alive if self.n_alive else 0.0
            if avg <= 0:
                out[f] = weights[f]
            else:
                out[f] = weights[f] / (1.0 - params.b + params.b * self.lengths[f, :n] / avg)
        self._norms = (self.generation, params, out)
        return out

    def idf(self, tid: int) -> float:
        df = self.postings[tid].df
        return math.log(1.0 + (self.n_alive - df + 0.5) / (df + 0.5))

    def score(self, groups: Sequence[tuple[Sequence[int], float]], eligible: Mask, params: Bm25Params) -> Floats:
        """Dense BM25F scores per slot. A group is a query word: its term ids (several when
        expanded as a prefix: the best of them counts) and the word's weight."""
        scores = np.zeros(self.n_slots, np.float64)
        norms = self.norms(params)
        k1 = params.k1
        for tids, weight in groups:
            best: Floats | None = np.zeros(self.n_slots, np.float64) if len(tids) > 1 else None
            for tid in tids:
                slots, tf = self.postings[tid].arrays()
                keep = eligible[slots]
                s = slots[keep]
                if not s.size:
                    continue
                tfw = (tf[:, keep] * norms[:, s]).sum(axis=0, dtype=np.float64)
                contribution = self.idf(tid) * tfw * (k1 + 1.0) / (tfw + k1)
                if best is None:
                    scores[s] += weight * contribution
                else:
                    best[s] = np.maximum(best[s], contribution)
            if best is not None:
                scores += weight * best
        return scores

    def has_phrase(self, slot: int, phrase: Ids) -> bool:
        stored = self.docs[slot]
        assert stored is not None
        return _contains(stored.title_seq, phrase) or _contains(stored.body_seq, phrase)

    def prefix_terms(self, prefix: str, limit: int) -> list[int]:
        """Up to `limit` live terms starting with `prefix`, the most frequent first."""
        cached = self._prefix
        if cached is None or cached[0] != len(self.terms):
            order = sorted(range(len(self.terms)), key=self.terms.__getitem__)
            cached = self._prefix = (len(self.terms), [self.terms[i] for i in order], order)
        _, sorted_terms, order = cached
        start = bisect.bisect_left(sorted_terms, prefix)
        found = []
        for i in range(start, min(start + 5000, len(sorted_terms))):
            if not sorted_terms[i].startswith(prefix):
                break
            if self.postings[order[i]].df > 0:
                found.append(order[i])
        found.sort(key=lambda t: -self.postings[t].df)
        return found[:limit]

    def snippet(self, slot: int, tids: Sequence[int], width: int) -> str:
        stored = self.docs[slot]
        assert stored is not None
        text = stored.text
        seq = stored.body_seq
        positions: NDArray[np.intp] = np.empty(0, np.intp)
        if tids and seq.size:
            found = seq == tids[0]
            for t in tids[1:]:
                found |= seq == t
            positions = np.flatnonzero(found)
        spans: list[tuple[int, int]] = []
        if positions.size:
            # Scanning a long body for the matches costs more than the search: find the densest
            # run of matching words in the term sequence, and scan only around where it should be
            # (by average word length), the whole body if the guess misses.
            chars_per_word = len(text) / seq.size
            run = max(4, int(width / chars_per_word))
            best = int(np.argmax(np.searchsorted(positions, positions + run) - np.arange(positions.size)))
            guess = int(positions[best] * chars_per_word)
            spans = self._spans(text, tids, guess - 600, guess + 600 + width)
            if not spans:
                spans = self._spans(text, tids, 0, len(text))
        if not spans:
            return html.escape(text[:width]) + ("…" if len(text) > width else "")
        # The window (starting a little before a match) holding the most matches.
        best_i, best_count, j = 0, 0, 0
        for i, (a, _) in enumerate(spans):
            j = max(j, i)
            while j < len(spans) and spans[j][1] <= a + width:
                j += 1
            if j - i > best_count:
                best_i, best_count = i, j - i
        start = max(0, spans[best_i][0] - width // 5)
        if start > 0:
            space = text.rfind(" ", 0, start)
            start = space + 1 if space >= 0 and start - space < 30 else start
        end = min(len(text), start + width)
        if end < len(text):
            space = text.find(" ", end)
            end = space if 0 <= space - end < 30 else end
        out = ["…"] if start > 0 else []
        pos = start
        for a, b in spans:
            if a < pos:
                continue
            if b > end:
                break
            out.append(html.escape(text[pos:a]))
            out.append(f"<mark>{html.escape(text[a:b])}</mark>")
            pos = b
        out.append(html.escape(text[pos:end]))
        if end < len(text):
            out.append("…")
        return "".join(out)

    def _spans(self, text: str, tids: Sequence[int], lo: int, hi: int) -> list[tuple[int, int]]:
        """Where the words of `tids` are in text[lo:hi] (widened to whole words)."""
        lo = 0 if lo <= 0 else text.rfind(" ", 0, lo) + 1
        end = text.find(" ", hi) if hi < len(text) else -1
        hi = len(text) if end < 0 else end
        rx = self._surface_regex(tids)
        return [(a + lo, b + lo) for a, b in (m.span() for m in islice(rx.finditer(fold_text(text[lo:hi])), 1000))]

    def _surface_regex(self, tids: Sequence[int]) -> re.Pattern[str]:
        key = tuple(sorted(set(tids)))
        rx = self._regex.get(key)
        if rx is None:
            forms = {self.terms[t] for t in key}
            for t in key:
                forms |= self.surfaces.get(t, set())
            alternatives = "|".join(re.escape(f) for f in sorted(forms, key=lambda f: (-len(f), f)))
            rx = re.compile(rf"(?<![^\W_])(?:{alternatives})(?![^\W_])")
            if len(self._regex) > 2048:
                self._regex.clear()
            self._regex[key] = rx
        return rx


def _pad(a: NDArray[Any], cap: int) -> NDArray[Any]:
    """`a` with its last axis zero-padded to `cap` (np.resize would repeat the content)."""
    out = np.zeros((*a.shape[:-1], cap), a.dtype)
    out[..., : a.shape[-1]] = a
    return out


def _contains(seq: Ids, phrase: Ids) -> bool:
    k = len(phrase)
    starts = np.flatnonzero(seq[: len(seq) - k + 1] == phrase[0]) if len(seq) >= k else np.empty(0, np.intp)
    for j in range(1, k):
        if not starts.size:
            return False
        starts = starts[seq[starts + j] == phrase[j]]
    return bool(starts.size)


# ----------------------------------------------------------------------------- the index


@dataclass(slots=True)
class _Plan:
    """A query as one partition sees it."""

    groups: list[tuple[list[int], float]]
    phrase: Ids | None
    marks: list[int]  # term ids to mark in snippets


class KbIndex:
    """The searchable versions of the knowledge base's articles."""

    def __init__(self, params: Bm25Params | None = None) -> None:
        self.params = params or Bm25Params()
        self._shards: dict[str, _Shard] = {}
        self._where: dict[UUID, tuple[str, int]] = {}
        self._categories: dict[str, int] = {}
        self._compactions = 0

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, article_id: object) -> bool:
        return article_id in self._where

    def version_of(self, article_id: UUID) -> int | None:
        where = self._where.get(article_id)
        if where is None:
            return None
        stored = self._shards[where[0]].docs[where[1]]
        return stored.version if stored is not None else None

    # -- writes

    def upsert(self, doc: ArticleDoc) -> bool:
        """Index this version in place of the article's previous one (its terms no longer match).
        An older version than the one indexed is ignored (returns False): replays and
        out-of-order deliveries cannot roll an article back; the same version is re-indexed."""
        current = self.version_of(doc.article_id)
        if current is not None and doc.version < current:
            return False
        self.remove(doc.article_id)
        shard = self._shards.get(doc.language)
        if shard is None:
            shard = self._shards[doc.language] = _Shard(doc.language)
        category_id = self._categories.setdefault(doc.category, len(self._categories))
        slot = shard.add(doc, category_id, strip_markdown(doc.body))
        self._where[doc.article_id] = (doc.language, slot)
        return True

    def remove(self, article_id: UUID) -> bool:
        where = self._where.pop(article_id, None)
        if where is None:
            return False
        shard = self._shards[where[0]]
        shard.kill(where[1])
        if shard.needs_compaction():
            for aid, slot in shard.compact().items():
                self._where[aid] = (shard.language, slot)
            self._compactions += 1
        return True

    # -- reads

    def search(self, query: SearchQuery) -> list[SearchHit]:
        category_id = self._category_id(query.category)
        if category_id == -1:
            return []
        want = query.offset + query.limit
        ranked: list[tuple[float, str, int]] = []
        marks: dict[str, list[int]] = {}
        for shard in self._targets(query.language):
            plan = self._plan(shard, query.q, query.prefix)
            if plan.groups:
                marks[shard.language] = plan.marks
                eligible = shard.eligible(query.audience == "public", category_id)
                ranked += self._rank(shard, plan, eligible, want)
        ranked.sort(key=lambda r: (-r[0], r[1], r[2]))
        return self._hits(ranked[query.offset : want], marks)

    def suggest(self, text: str, language: str | None = None, limit: int = 5, *,
                audience: Audience = "public", category: str | None = None) -> list[SearchHit]:
        """Articles for a ticket (pass its subject and body): its most informative terms (highest
        tf-idf in the ticket) are searched, without phrase boost. Published only by default:
        suggestions end up in replies to players, and a draft is not approved for that; an agent
        console may pass audience="agent" to see drafts too."""
        category_id = self._category_id(category)
        if category_id == -1 or limit < 1:
            return []
        ranked: list[tuple[float, str, int]] = []
        marks: dict[str, list[int]] = {}
        ticket_words = words(text[: self.params.suggest_chars])
        for shard in self._targets(language):
            counts: dict[int, int] = {}
            for w in ticket_words:
                tid = shard.lookup(w)
                if tid is not None and shard.postings[tid].df > 0:
                    counts[tid] = counts.get(tid, 0) + 1
            weighted = sorted(((shard.idf(t) * (1.0 + math.log(c)), t) for t, c in counts.items()), reverse=True)
            chosen = weighted[: self.params.suggest_terms]
            if not chosen:
                continue
            plan = _Plan([([t], 1.0 + math.log(counts[t])) for _, t in chosen], None, [t for _, t in chosen])
            marks[shard.language] = plan.marks
            ranked += self._rank(shard, plan, shard.eligible(audience == "public", category_id), limit)
        ranked.sort(key=lambda r: (-r[0], r[1], r[2]))
        return self._hits(ranked[:limit], marks)

    def stats(self) -> KbStats:
        names = {i: c for c, i in self._categories.items()}
        by_category: dict[str, int] = {}
        published = terms = postings = dead = 0
        for shard in self._shards.values():
            n = shard.n_slots
            alive = shard.alive[:n]
            published += int((alive & shard.published[:n]).sum())
            for cid, count in enumerate(np.bincount(shard.category[:n][alive]).tolist()):
                if count:
                    by_category[names[cid]] = by_category.get(names[cid], 0) + count
            terms += len(shard.terms)
            postings += sum(len(p.slots) for p in shard.postings)
            dead += n - shard.n_alive
        return KbStats(
            articles=len(self._where), published=published, drafts=len(self._where) - published,
            by_language={lang: s.n_alive for lang, s in sorted(self._shards.items()) if s.n_alive},
            by_category=dict(sorted(by_category.items())), terms=terms, postings=postings, dead_slots=dead,
            compactions=self._compactions,
        )

    # -- internals

    def _category_id(self, category: str | None) -> int | None:
        """None: no filter; -1: a category nothing is filed under."""
        if category is None:
            return None
        return self._categories.get(category.strip().lower(), -1)

    def _targets(self, language: str | None) -> list[_Shard]:
        if language is None:
            return [s for s in self._shards.values() if s.n_alive]
        shard = self._shards.get(language.strip().lower())
        return [shard] if shard is not None and shard.n_alive else []

    def _plan(self, shard: _Shard, q: str, prefix: bool) -> _Plan:
        ws = words(q)
        typing_last = prefix and bool(ws) and not q[-1:].isspace()
        weights: dict[int, float] = {}
        sequence: list[int] = []
        complete = True
        for i, w in enumerate(ws):
            tid = shard.lookup(w)
            if tid is None:
                # A stop word stands for any stop word in the phrase; an unknown word means no phrase.
                complete = complete and shard.analyzer.term(w) is None
                sequence.append(-1)
                continue
            sequence.append(tid)
            if not (typing_last and i == len(ws) - 1):
                weights[tid] = weights.get(tid, 0.0) + 1.0
        groups: list[tuple[list[int], float]] = [([t], w) for t, w in weights.items()]
        marks = list(weights)
        if typing_last:
            last = _fold_word(ws[-1])
            expanded = shard.prefix_terms(last, self.params.prefix_expansions) if len(last) >= 2 else []
            exact = shard.lookup(ws[-1])
            if exact is not None and exact not in expanded:
                expanded.append(exact)
            expanded = [t for t in expanded if t not in weights]
            if expanded:
                groups.append((expanded, 1.0))
                marks += expanded
        while sequence and sequence[-1] < 0:
            sequence.pop()
        while sequence and sequence[0] < 0:
            sequence.pop(0)
        real = sum(t >= 0 for t in sequence)
        phrase = np.array(sequence, np.int32) if complete and real >= 2 and not typing_last else None
        return _Plan(groups, phrase, marks)

    def _rank(self, shard: _Shard, plan: _Plan, eligible: Mask, want: int) -> list[tuple[float, str, int]]:
        scores = shard.score(plan.groups, eligible, self.params)
        candidates = np.flatnonzero(scores > 0)
        if not candidates.size:
            return []
        window = max(want, self.params.rerank_window if plan.phrase is not None else want)
        if candidates.size > window:
            top = np.argpartition(-scores[candidates], window - 1)[:window]
            candidates = candidates[top]
        values = scores[candidates]
        if plan.phrase is not None and self.params.phrase_boost > 0:
            boost = 1.0 + self.params.phrase_boost
            values = np.array([v * boost if shard.has_phrase(s, plan.phrase) else v
                               for v, s in zip(values.tolist(), candidates.tolist(), strict=True)])
        order = np.lexsort((candidates, -values))[:want]
        return [(float(values[i]), shard.language, int(candidates[i])) for i in order.tolist()]

    def _hits(self, ranked: Sequence[tuple[float, str, int]], marks: dict[str, list[int]]) -> list[SearchHit]:
        hits = []
        for score, language, slot in ranked:
            shard = self._shards[language]
            stored = shard.docs[slot]
            assert stored is not None
            hits.append(SearchHit(
                article_id=stored.article_id, version=stored.version, title=stored.title, score=score,
                snippet=shard.snippet(slot, marks[language], self.params.snippet_chars), language=language,
                category=stored.category, status=stored.status,
            ))
        return hits
