"""Knowledge-base search: analysis (folding, stop words, stemming, Markdown), ranking (fields,
phrases), filters (language, category, audience), index maintenance (upsert, remove,
compaction), snippets, suggestions, and properties that hold for any corpus and query."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.kb_search import Bm25Params, KbIndex, analyse, stem_en, strip_markdown, words
from schemas.kb import ArticleDoc, SearchQuery

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def doc(
    title: str,
    body: str = "",
    *,
    language: str = "en",
    category: str = "payments",
    tags: list[str] | None = None,
    status: str = "published",
    version: int = 1,
    article_id: uuid.UUID | None = None,
) -> ArticleDoc:
    return ArticleDoc(
        article_id=article_id or uuid.uuid4(),
        version=version,
        language=language,
        category=category,
        title=title,
        body=body,
        tags=tags or [],
        status=status,
        updated_at=NOW,
    )


def index(*docs: ArticleDoc, params: Bm25Params | None = None) -> KbIndex:
    idx = KbIndex(params)
    for d in docs:
        idx.upsert(d)
    return idx


def ids(idx: KbIndex, q: str, **kw: Any) -> list[uuid.UUID]:
    return [h.article_id for h in idx.search(SearchQuery(q=q, audience=kw.pop("audience", "agent"), **kw))]


FILLER = "Please read the terms and conditions of the casino before you play any game on the site."

# ----------------------------------------------------------------------------- analysis


def test_tokens_like_kyc_2fa_p1_and_numbers_survive() -> None:
    assert analyse("KYC, 2FA and P1 tickets since 2024", "en") == ["kyc", "2fa", "p1", "ticket", "sinc", "2024"]


def test_accents_and_special_letters_are_folded() -> None:
    assert words("Bónus ÅNGSTRÖM Straße Øre naïve ħal") == ["bonus", "angstrom", "straße", "ore", "naive", "hal"]
    assert analyse("Straße", "de") == analyse("strasse", "de") == ["strasse"]


def test_stop_words_are_dropped_per_language() -> None:
    assert analyse("What is the bonus of the week", "en") == ["bonus", "week"]
    assert analyse("Die Auszahlung für den Bonus", "de") == ["auszahlung", "bonus"]
    assert analyse("die", "en") == ["die"]  # English "die" (dice) is not a stop word


@pytest.mark.parametrize(
    ("word", "stem"),
    [
        ("bonuses", "bonus"),
        ("bonus", "bonus"),
        ("withdrawals", "withdrawal"),
        ("verified", "verify"),
        ("verifies", "verify"),
        ("betting", "bet"),
        ("games", "gam"),
        ("gaming", "gam"),
        ("game", "gam"),
        ("status", "status"),
        ("access", "access"),
        ("spring", "spring"),
        ("2fa", "2fa"),
        ("limits", "limit"),
    ],
)
def test_english_stemmer(word: str, stem: str) -> None:
    assert stem_en(word) == stem


def test_markdown_syntax_is_stripped() -> None:
    text = strip_markdown("# Deposits\n\n**Bold** and [the link](https://x.test/a) and `code`\n\n- one\n- two_three")
    assert text == "Deposits Bold and the link and code one two_three"


# ----------------------------------------------------------------------------- ranking


def test_title_match_outranks_body_match() -> None:
    in_body = doc("General help", f"How a withdrawal works. {FILLER}")
    in_title = doc("Withdrawal", FILLER)
    assert ids(index(in_body, in_title), "withdrawal") == [in_title.article_id, in_body.article_id]


def test_tag_match_outranks_body_match() -> None:
    in_body = doc("General help", f"How a withdrawal works. {FILLER}")
    tagged = doc("General help", FILLER, tags=["withdrawal"])
    assert ids(index(in_body, tagged), "withdrawal") == [tagged.article_id, in_body.article_id]


def test_exact_phrase_ranks_first() -> None:
    scattered = doc("Limits", "A limit on each withdrawal. The withdrawal and the limit are shown. " + FILLER)
    phrase = doc("Limits", "Your withdrawal limit is shown in the cashier. " + FILLER)
    assert ids(index(scattered, phrase), "withdrawal limit") == [phrase.article_id, scattered.article_id]
    no_boost = index(scattered, phrase, params=Bm25Params(phrase_boost=0))
    assert ids(no_boost, "withdrawal limit")[0] == scattered.article_id


def test_accent_folding_matches_both_ways() -> None:
    accented = doc("Bónus de bienvenida", "El bónus se activa.", language="es")
    idx = index(accented)
    assert ids(idx, "bonus") == ids(idx, "BÓNUS") == [accented.article_id]


def test_stop_words_in_a_query_are_ignored() -> None:
    a = doc("Deposit methods", "Cards and bank transfers.")
    idx = index(a, doc("Other", "The of and to is it"))
    assert ids(idx, "the deposit") == ids(idx, "deposit") == [a.article_id]
    assert ids(idx, "the of and") == []


def test_a_phrase_does_not_jump_over_a_stop_word() -> None:
    apart = doc("Limits", "Set a withdrawal and the limit. " + FILLER)
    together = doc("Limits", "Set a withdrawal limit now. " + FILLER)
    hits = index(apart, together).search(SearchQuery(q="withdrawal limit", audience="agent"))
    assert [h.article_id for h in hits] == [together.article_id, apart.article_id]
    assert hits[0].score > 1.5 * hits[1].score


def test_stemming_matches_inflections() -> None:
    a = doc("Verifying your account", "Accounts are verified within two days.")
    assert ids(index(a), "verify account") == [a.article_id]


def test_prefix_matches_the_last_word_as_you_type() -> None:
    a = doc("Responsible gambling", "Set deposit limits and self-exclusion.")
    idx = index(a)
    assert ids(idx, "responsible gamb") == [a.article_id]  # "responsible" alone already matches
    assert ids(idx, "gamb") == []
    assert ids(idx, "gamb", prefix=True) == [a.article_id]
    assert ids(idx, "deposit lim", prefix=True) == [a.article_id]


# ----------------------------------------------------------------------------- filters


def test_drafts_are_hidden_from_the_public() -> None:
    draft = doc("Bonus terms", "New bonus terms.", status="draft")
    published = doc("Bonus", "Old bonus terms.")
    idx = index(draft, published)
    assert set(ids(idx, "bonus", audience="agent")) == {draft.article_id, published.article_id}
    assert ids(idx, "bonus", audience="public") == [published.article_id]


def test_language_filter() -> None:
    en = doc("Bonus", "Welcome bonus.")
    de = doc("Bonus", "Willkommensbonus und Bonus.", language="de")
    idx = index(en, de)
    assert ids(idx, "bonus", language="de") == [de.article_id]
    assert ids(idx, "bonus", language="EN") == [en.article_id]
    assert set(ids(idx, "bonus")) == {en.article_id, de.article_id}
    assert ids(idx, "bonus", language="fr") == []


def test_category_filter() -> None:
    pay = doc("Bonus payouts", "Bonus.", category="payments")
    promo = doc("Bonus offers", "Bonus.", category="promotions")
    idx = index(pay, promo)
    assert ids(idx, "bonus", category="promotions") == [promo.article_id]
    assert ids(idx, "bonus", category="unknown") == []


# ----------------------------------------------------------------------------- maintenance


def test_upsert_replaces_the_old_versions_terms() -> None:
    aid = uuid.uuid4()
    idx = index(doc("Cashback", "Weekly cashback on losses.", article_id=aid))
    assert idx.upsert(doc("Rakeback", "Monthly rakeback on poker.", article_id=aid, version=2))
    assert ids(idx, "cashback") == []
    hits = idx.search(SearchQuery(q="rakeback", audience="agent"))
    assert [(h.article_id, h.version) for h in hits] == [(aid, 2)]
    assert idx.stats().articles == 1


def test_an_older_version_never_replaces_a_newer_one() -> None:
    aid = uuid.uuid4()
    idx = index(doc("Rakeback", "", article_id=aid, version=3))
    assert not idx.upsert(doc("Cashback", "", article_id=aid, version=2))
    assert idx.version_of(aid) == 3
    assert ids(idx, "cashback") == []


def test_upsert_can_move_an_article_to_another_language_and_category() -> None:
    aid = uuid.uuid4()
    idx = index(doc("Bonus", "", article_id=aid))
    idx.upsert(doc("Bonus", "", article_id=aid, version=2, language="de", category="promotions"))
    assert ids(idx, "bonus", language="en") == []
    assert ids(idx, "bonus", language="de", category="promotions") == [aid]


def test_remove() -> None:
    a, b = doc("Bonus one", ""), doc("Bonus two", "")
    idx = index(a, b)
    assert idx.remove(a.article_id)
    assert not idx.remove(a.article_id)
    assert ids(idx, "bonus") == [b.article_id]
    assert a.article_id not in idx


def test_compaction_keeps_every_live_article_findable() -> None:
    keep = [doc(f"Keep {i}", "stable article", tags=["kept"]) for i in range(50)]
    idx = index(*keep)
    churn = uuid.uuid4()
    for v in range(1, 800):
        idx.upsert(doc("Churn", f"version {v} volatile", article_id=churn, version=v))
    stats = idx.stats()
    assert stats.compactions >= 1 and stats.articles == 51
    assert set(ids(idx, "stable", limit=50)) == {d.article_id for d in keep}
    assert ids(idx, "volatile") == [churn]


# ----------------------------------------------------------------------------- snippets and suggestions


def test_snippet_marks_matches_after_escaping() -> None:
    a = doc("Odds", 'If 2 < 3 & "x" > 1 then the Bónus code "BONUS" applies.')
    hit = index(a).search(SearchQuery(q="bonus 3", audience="agent"))[0]
    assert hit.snippet == (
        "If 2 &lt; <mark>3</mark> &amp; &quot;x&quot; &gt; 1 then the <mark>Bónus</mark> code "
        "&quot;<mark>BONUS</mark>&quot; applies."
    )


def test_snippet_is_a_window_around_the_matches_of_a_long_body() -> None:
    body = " ".join(["lorem ipsum dolor"] * 200) + " the jackpot is paid at once " + " ".join(["sit amet"] * 200)
    hit = index(doc("Long", body)).search(SearchQuery(q="jackpot", audience="agent"))[0]
    assert hit.snippet.startswith("…") and hit.snippet.endswith("…")
    assert "<mark>jackpot</mark>" in hit.snippet and len(hit.snippet) < 300


def test_suggest_finds_articles_for_a_ticket_and_hides_drafts_by_default() -> None:
    kyc = doc("KYC documents", "Upload your passport or ID card to verify your identity.", tags=["kyc"])
    draft = doc("KYC changes", "New KYC passport rules.", status="draft")
    other = doc("Bonus", "Welcome bonus.")
    idx = index(kyc, draft, other)
    ticket = "Hello, I uploaded my passport yesterday but my account is still not verified. KYC pending?"
    assert [h.article_id for h in idx.suggest(ticket, "en")] == [kyc.article_id]
    assert set(h.article_id for h in idx.suggest(ticket, "en", audience="agent")) == {kyc.article_id, draft.article_id}
    assert idx.suggest("the and of", "en") == []
    assert idx.suggest(ticket, "en", limit=0) == []


def test_stats() -> None:
    idx = index(doc("A", "x"), doc("B", "y", status="draft", language="de", category="kyc"))
    s = idx.stats()
    assert (s.articles, s.published, s.drafts) == (2, 1, 1)
    assert s.by_language == {"de": 1, "en": 1} and s.by_category == {"kyc": 1, "payments": 1}


# ----------------------------------------------------------------------------- properties

VOCAB = [
    "bonus",
    "bónus",
    "withdrawal",
    "withdrawals",
    "limit",
    "kyc",
    "2fa",
    "p1",
    "deposit",
    "the",
    "and",
    "die",
    "und",
    "verified",
    "verify",
    "Straße",
    "ÉCU",
    "jackpot",
    "spin",
    "free",
]
LANGS = ["en", "de", "mt"]
STATUSES = ["draft", "published"]
CATEGORIES = ["payments", "kyc", "promotions"]

texts = st.lists(st.sampled_from(VOCAB), max_size=20).map(" ".join)
docs = st.builds(
    lambda title, body, tags, lang, status, cat: doc(
        title or "untitled", body, tags=tags, language=lang, status=status, category=cat
    ),
    texts,
    texts,
    st.lists(st.sampled_from(VOCAB), max_size=3, unique=True),
    st.sampled_from(LANGS),
    st.sampled_from(STATUSES),
    st.sampled_from(CATEGORIES),
)
corpora = st.lists(docs, max_size=15)
queries = st.builds(
    lambda q, lang, cat, audience, limit, offset: SearchQuery(
        q=q, language=lang, category=cat, audience=audience, limit=limit, offset=offset
    ),
    st.lists(st.sampled_from(VOCAB), min_size=1, max_size=4).map(" ".join),
    st.none() | st.sampled_from(LANGS),
    st.none() | st.sampled_from(CATEGORIES),
    st.sampled_from(["agent", "public"]),
    st.integers(1, 50),
    st.integers(0, 5),
)
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(corpora, st.text(min_size=1, max_size=200), st.booleans())
def test_search_never_raises_on_arbitrary_text(corpus: list[ArticleDoc], q: str, prefix: bool) -> None:
    idx = index(*corpus)
    for audience in ("agent", "public"):
        idx.search(SearchQuery(q=q, audience=audience, prefix=prefix))
    idx.suggest(q, None)


@FAST
@given(corpora, queries)
def test_hits_hold_a_query_term_match_the_filters_and_are_sorted(corpus: list[ArticleDoc], query: SearchQuery) -> None:
    by_id = {d.article_id: d for d in corpus}
    hits = index(*corpus).search(query)
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert len(hits) <= query.limit
    for h in hits:
        d = by_id[h.article_id]
        terms = set(analyse(" ".join([d.title, d.body, *d.tags]), d.language))
        assert terms & set(analyse(query.q, d.language))
        assert query.language in (None, d.language) and query.category in (None, d.category)
        assert query.audience == "agent" or d.status == "published"
        assert h.score > 0


@FAST
@given(corpora, queries)
def test_pages_are_slices_of_one_ranking(corpus: list[ArticleDoc], query: SearchQuery) -> None:
    idx = index(*corpus)
    whole = idx.search(query.model_copy(update={"offset": 0, "limit": query.offset + query.limit}))
    assert idx.search(query) == whole[query.offset :]


@FAST
@given(corpora, docs, queries)
def test_removing_an_upserted_article_restores_every_ranking(
    corpus: list[ArticleDoc], extra: ArticleDoc, query: SearchQuery
) -> None:
    idx = index(*corpus)
    before = idx.search(query)
    idx.upsert(extra)
    idx.remove(extra.article_id)
    assert idx.search(query) == before


@FAST
@given(corpora, queries, st.randoms(use_true_random=False))
def test_insertion_order_does_not_change_scores(corpus: list[ArticleDoc], query: SearchQuery, rnd: Any) -> None:
    shuffled = list(corpus)
    rnd.shuffle(shuffled)
    wide = query.model_copy(update={"offset": 0, "limit": 50})
    a = {h.article_id: h.score for h in index(*corpus).search(wide)}
    b = {h.article_id: h.score for h in index(*shuffled).search(wide)}
    assert a.keys() == b.keys()
    assert all(a[k] == pytest.approx(b[k]) for k in a)


@FAST
@given(corpora, queries)
def test_public_results_are_the_published_part_of_agent_results(corpus: list[ArticleDoc], query: SearchQuery) -> None:
    idx = index(*corpus)
    wide = query.model_copy(update={"offset": 0, "limit": 50})
    public = {h.article_id: h.score for h in idx.search(wide.model_copy(update={"audience": "public"}))}
    agent = {h.article_id: h.score for h in idx.search(wide.model_copy(update={"audience": "agent"}))}
    published = {d.article_id for d in corpus if d.status == "published"}
    assert public.keys() == agent.keys() & published
    # Filters cut postings, they do not change term statistics: a document scores the same for both.
    assert all(public[k] == pytest.approx(agent[k]) for k in public)
