"""Knowledge-base articles as the search engine sees them, search requests and their hits.

The KB service (storage, versions, editing) owns the full article record; `ArticleDoc` is the
one version of an article that is searchable: the newest version the service hands to the
index. `domain.kb_search` indexes these and answers `SearchQuery` with `SearchHit`s.
"""

from __future__ import annotations

from typing import Annotated, Literal
from uuid import UUID

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from schemas.common import AwareDatetime

ArticleStatus = Literal["draft", "published"]
# "agent": the help-desk console, drafts included. "public": the FAQ endpoint, published only.
Audience = Literal["agent", "public"]

TITLE_MAX = 200
BODY_MAX = 100_000
QUERY_MAX = 500
LIMIT_MAX = 50
# Deep paging is not a use case of a help desk; a bound keeps the ranking window small.
OFFSET_MAX = 1_000


def _strip(value: object) -> object:
    return value.strip() if isinstance(value, str) else value


def _lower_strip(value: object) -> object:
    return value.strip().lower() if isinstance(value, str) else value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


# BCP 47 primary language subtag only ("en", "de", "mt"): the index keeps one partition per
# language (its own stop words, stemmer and term statistics), so "en-GB" and "en" must agree.
Language = Annotated[str, BeforeValidator(_lower_strip), Field(min_length=2, max_length=3, pattern=r"^[a-z]{2,3}$")]
Category = Annotated[
    str, BeforeValidator(_lower_strip), Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
]
Tag = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=64)]
Title = Annotated[str, BeforeValidator(_strip), Field(min_length=1, max_length=TITLE_MAX)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ArticleDoc(_Model):
    """One version of an article, as indexed. `body` is plain text or Markdown (its syntax is
    stripped before indexing and in snippets)."""

    article_id: UUID
    version: int = Field(ge=1)
    language: Language
    category: Category
    title: Title
    body: str = Field(default="", max_length=BODY_MAX)
    tags: Annotated[list[Tag], Field(max_length=50), AfterValidator(_unique)] = []
    status: ArticleStatus
    updated_at: AwareDatetime


class SearchQuery(_Model):
    q: Annotated[str, Field(min_length=1, max_length=QUERY_MAX)]
    language: Language | None = None
    category: Category | None = None
    audience: Audience = "public"
    limit: int = Field(default=10, ge=1, le=LIMIT_MAX)
    offset: int = Field(default=0, ge=0, le=OFFSET_MAX)
    # As-you-type: the last word also matches indexed terms that start with it.
    prefix: bool = False


class SearchHit(_Model):
    article_id: UUID
    version: int
    title: str  # plain text: escape it when rendering
    score: float
    # HTML: the text is escaped first, then the matched words are wrapped in <mark>...</mark>.
    snippet: str
    language: str
    category: str
    status: ArticleStatus


class KbStats(_Model):
    articles: int
    published: int
    drafts: int
    by_language: dict[str, int]
    by_category: dict[str, int]
    terms: int  # distinct indexed terms over all languages
    postings: int  # (term, document version) pairs held, including those of replaced versions not yet compacted
    dead_slots: int  # replaced or removed versions still in the postings, dropped at the next compaction
    compactions: int
