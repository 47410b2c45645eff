"""Knowledge-base search alone (no stack): index build, memory, search and suggest latency.

Builds --articles synthetic articles over 6 languages and 10 categories: per language a
generated vocabulary (some accented words, some shared help-desk tokens like kyc, 2fa, p1)
drawn with a Zipf distribution, English and German bodies salted with their stop words,
200-2,000 body words, a title of 3-10 words, 0-4 tags, a fifth of them drafts. Then times
--queries mixed queries (1-5 words drawn from the same distributions; 40% with a language,
20% with a category, half public, 10% as-you-type prefixes, a few multi-word phrases cut
from a body) and --tickets suggest() calls on 50-300-word tickets. Each call is timed alone.

    python -m benchmarks kb
    python -m benchmarks.kb --articles 10000 --queries 2000
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np

from benchmarks.common import Report, host_note, percentile, rss_bytes
from domain.kb_search import STOP_WORDS, KbIndex
from schemas.kb import ArticleDoc, SearchQuery

TARGET_P99_MS = 20.0
LANGUAGES = ["en", "de", "es", "it", "sv", "mt"]
CATEGORIES = [
    "payments",
    "withdrawals",
    "bonuses",
    "kyc",
    "account",
    "security",
    "responsible-gambling",
    "games",
    "sports",
    "technical",
]
SHARED = ["kyc", "2fa", "p1", "bonus", "casino", "iban", "sepa", "visa", "paypal", "rtp", "slots", "poker", "eur"]
SYLLABLES = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ta",
    "ri",
    "su",
    "ve",
    "do",
    "ba",
    "ge",
    "pu",
    "zo",
    "fi",
    "an",
    "el",
    "or",
    "st",
    "tr",
    "qu",
    "sch",
    "ll",
    "ch",
    "nd",
]
ACCENTS = {"a": "á", "e": "é", "o": "ö", "u": "ü", "i": "í"}


@dataclass(frozen=True, slots=True)
class KbOptions:
    articles: int = 10_000
    queries: int = 2_000
    tickets: int = 300
    vocabulary: int = 30_000  # distinct words per language
    zipf: float = 1.07
    seed: int = 11


class _Language:
    def __init__(self, rng: random.Random, language: str, size: int, zipf: float) -> None:
        seen: set[str] = set(SHARED)
        vocab = list(SHARED)
        while len(vocab) < size:
            w = "".join(rng.choice(SYLLABLES) for _ in range(rng.choice((2, 2, 3, 3, 3, 4))))
            if rng.random() < 0.05:  # some accented words, found again by their unaccented spelling
                w = "".join(ACCENTS.get(c, c) if rng.random() < 0.3 else c for c in w)
            if rng.random() < 0.03:
                w += str(rng.randint(1, 99))
            if w not in seen:
                seen.add(w)
                vocab.append(w)
        rng.shuffle(vocab)
        self.words = np.array(vocab, dtype=object)
        weights = 1.0 / np.arange(1, size + 1) ** zipf
        self.cdf = np.cumsum(weights / weights.sum())
        self.stop = np.array(sorted(STOP_WORDS.get(language, ())), dtype=object)

    def draw(self, nrng: np.random.Generator, n: int, stop_share: float = 0.0) -> list[str]:
        out = self.words[np.minimum(np.searchsorted(self.cdf, nrng.random(n)), len(self.words) - 1)]
        if self.stop.size and stop_share:
            salt = nrng.random(n) < stop_share
            out[salt] = self.stop[nrng.integers(0, self.stop.size, int(salt.sum()))]
        return list(out)


def _corpus(opts: KbOptions) -> tuple[list[ArticleDoc], dict[str, _Language]]:
    rng = random.Random(opts.seed)
    nrng = np.random.default_rng(opts.seed)
    langs = {lang: _Language(rng, lang, opts.vocabulary, opts.zipf) for lang in LANGUAGES}
    now = datetime.now(UTC)
    docs = []
    for _ in range(opts.articles):
        lang = rng.choice(LANGUAGES)
        gen = langs[lang]
        body_words = gen.draw(nrng, rng.randint(200, 2000), 0.35)
        # Paragraphs and a little Markdown, as authors write.
        for i in range(60, len(body_words), rng.randint(60, 120)):
            body_words[i] = "\n\n## " + body_words[i].capitalize() if rng.random() < 0.2 else "\n\n" + body_words[i]
        title = " ".join(gen.draw(nrng, rng.randint(3, 10), 0.2)).capitalize()
        docs.append(
            ArticleDoc(
                article_id=uuid.UUID(int=rng.getrandbits(128)),
                version=rng.randint(1, 5),
                language=lang,
                category=rng.choice(CATEGORIES),
                title=title[:200],
                body=" ".join(body_words),
                tags=list(dict.fromkeys(gen.draw(nrng, rng.randint(0, 4)))),
                status="draft" if rng.random() < 0.2 else "published",
                updated_at=now,
            )
        )
    return docs, langs


def _queries(opts: KbOptions, docs: list[ArticleDoc], langs: dict[str, _Language]) -> list[SearchQuery]:
    rng = random.Random(opts.seed + 1)
    nrng = np.random.default_rng(opts.seed + 1)
    out = []
    for _ in range(opts.queries):
        lang = rng.choice(LANGUAGES)
        prefix = rng.random() < 0.1
        if rng.random() < 0.1:  # a phrase lifted from an article
            body = rng.choice(docs).body.split()
            start = rng.randrange(max(1, len(body) - 5))
            q = " ".join(body[start : start + rng.randint(2, 4)])
        else:
            q = " ".join(langs[lang].draw(nrng, rng.randint(1, 5), 0.1))
        if prefix and len(q) > 3:
            q = q[: -rng.randint(1, min(3, len(q) - 2))]
        out.append(
            SearchQuery(
                q=q[:500],
                language=lang if rng.random() < 0.4 else None,
                category=rng.choice(CATEGORIES) if rng.random() < 0.2 else None,
                audience="public" if rng.random() < 0.5 else "agent",
                limit=rng.choice((5, 10, 10, 20)),
                offset=rng.choice((0, 0, 0, 10)),
                prefix=prefix,
            )
        )
    return out


def measure(opts: KbOptions) -> Report:
    report = Report(
        "kb",
        f"{opts.articles:,} articles, {len(LANGUAGES)} languages, {len(CATEGORIES)} categories, "
        f"{opts.queries:,} queries, {opts.tickets} tickets",
    )
    t0 = time.perf_counter()
    docs, langs = _corpus(opts)
    generated = time.perf_counter() - t0
    queries = _queries(opts, docs, langs)
    body_words = sum(len(d.body.split()) for d in docs)

    gc.collect()
    rss_before = rss_bytes(os.getpid()) // 1024
    idx = KbIndex()
    t0 = time.perf_counter()
    for d in docs:
        idx.upsert(d)
    build = time.perf_counter() - t0
    gc.collect()
    rss_after = rss_bytes(os.getpid()) // 1024
    stats = idx.stats()

    clock = time.perf_counter_ns
    for q in queries[:200]:  # warm the postings snapshots and caches
        idx.search(q)
    samples: list[int] = []
    cpu: list[int] = []  # this process's CPU time: what the search costs when the box is shared
    cpu_clock = time.process_time_ns
    kinds: dict[str, list[int]] = {"filtered": [], "public": [], "prefix": [], "plain": []}
    hits = 0
    for q in queries:
        c, t = cpu_clock(), clock()
        found = idx.search(q)
        ns = clock() - t
        cpu.append(cpu_clock() - c)
        samples.append(ns)
        hits += len(found)
        kind = (
            "prefix"
            if q.prefix
            else "filtered"
            if q.language or q.category
            else "public"
            if q.audience == "public"
            else "plain"
        )
        kinds[kind].append(ns)
    samples.sort()
    cpu.sort()

    rng = random.Random(opts.seed + 2)
    nrng = np.random.default_rng(opts.seed + 2)
    tickets = []
    for _ in range(opts.tickets):
        lang = rng.choice(LANGUAGES)
        tickets.append((" ".join(langs[lang].draw(nrng, rng.randint(50, 300), 0.35)), lang))
    suggest = []
    for text, lang in tickets:
        t = clock()
        idx.suggest(text, lang if rng.random() < 0.8 else None, 5)
        suggest.append(clock() - t)
    suggest.sort()

    churn = docs[: min(1000, len(docs))]
    t0 = time.perf_counter()
    for d in churn:
        idx.upsert(d.model_copy(update={"version": d.version + 10, "title": d.title + " updated"}))
    upsert_ms = (time.perf_counter() - t0) / max(1, len(churn)) * 1000

    def ms(ns: float) -> str:
        return f"{ns / 1e6:.2f} ms"

    p99 = percentile(samples, 99) / 1e6
    report.add("search p50", ms(percentile(samples, 50)))
    report.add("search p99", ms(percentile(samples, 99)), f"<= {TARGET_P99_MS:.0f} ms", p99 <= TARGET_P99_MS)
    report.add("search max", ms(samples[-1]))
    report.add("search CPU time p50 / p99", f"{ms(percentile(cpu, 50))} / {ms(percentile(cpu, 99))}")
    for kind, values in kinds.items():
        if values:
            values.sort()
            report.add(
                f"  {kind} ({len(values)}) p50 / p99", f"{ms(percentile(values, 50))} / {ms(percentile(values, 99))}"
            )
    report.add("suggest p50 / p99", f"{ms(percentile(suggest, 50))} / {ms(percentile(suggest, 99))}")
    report.add("index build", f"{build:.1f} s ({len(docs) / build:,.0f} articles/s)")
    report.add("upsert of a new version (index warm)", f"{upsert_ms:.2f} ms")
    report.add("index memory (RSS delta)", f"{(rss_after - rss_before) / 1024:,.0f} MiB")
    report.notes.append(
        f"corpus: {body_words:,} body words ({body_words / len(docs):,.0f} per article), "
        f"generated in {generated:.1f}s; {stats.terms:,} terms, {stats.postings:,} postings, "
        f"{stats.published:,} published"
    )
    report.notes.append(
        f"mean hits per query: {hits / len(queries):.1f}; after the churn: "
        f"{idx.stats().dead_slots} dead slots, {idx.stats().compactions} compactions"
    )
    report.notes.append(f"{host_note()}, numpy {np.__version__}, one core")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.kb", description=__doc__.split("\n")[0])
    defaults = KbOptions()
    p.add_argument("--articles", type=int, default=defaults.articles)
    p.add_argument("--queries", type=int, default=defaults.queries)
    p.add_argument("--tickets", type=int, default=defaults.tickets)
    p.add_argument("--vocabulary", type=int, default=defaults.vocabulary)
    p.add_argument("--seed", type=int, default=defaults.seed)
    args = p.parse_args(argv)
    opts = KbOptions(args.articles, args.queries, args.tickets, args.vocabulary, defaults.zipf, args.seed)
    print(measure(opts).render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
