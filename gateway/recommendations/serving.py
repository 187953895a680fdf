"""Serving one customer's recommendations: a stored lookup, then filters.

Candidates come, best first, from the customer's stored list (personalised only),
from the neighbours of what a send-time ``context`` says they just browsed or bought
(personalised only), and from popularity (a category's best sellers, or what is
trending). Then: one product once, nothing already bought, the asked category, and
only what the shop has in stock now (short-lived cache). Without personalisation
consent nothing behaviour-based is used, and every reason says "popular" or
"trending".
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.records import Product
from gateway.federation import Federation
from gateway.recommendations.catalogue import ProductCatalogue
from gateway.recommendations.consent import personalisation_allowed
from gateway.recommendations.memo import Memo
from gateway.recommendations.store import Candidate, CustomerList, RecommendationStore
from gateway.settings import Settings

MAX_LIMIT = 50
_POPULAR_POOL = 100  # popular products read per request to fill after filtering
_CONTEXT_WEIGHTS = {"viewed_with": 1.0, "bought_with": 4.0}
# A withdrawn consent takes effect within this many seconds on every instance.
CONSENT_TTL_S = 5.0


@dataclass(frozen=True, slots=True)
class RecommendationContext:
    """What the caller knows at send time, newer than the last build (product ids)."""

    browsing_history: tuple[str, ...] = ()
    purchase_history: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Recommendation:
    product: Product
    score: float
    reason: str
    category: str | None = None


def _wanted(
    sources: Sequence[Sequence[Candidate]], excluded: set[str], category: str | None
) -> Iterator[Candidate]:
    """Candidates in rank order, each product once, none excluded, in the category (lazy:
    serving usually needs the first dozen of a hundred or more)."""
    seen = set(excluded)
    for source in sources:
        for candidate in source:
            if candidate.product_id in seen:
                continue
            seen.add(candidate.product_id)
            if category is None or candidate.category in (None, category):
                yield candidate


class Recommender:
    def __init__(
        self, store: RecommendationStore, catalogue: ProductCatalogue, *, model_ttl_s: float = 0.0
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        # The stored model changes only with a build: reuse reads of it for model_ttl_s.
        self._lists: Memo[uuid.UUID, CustomerList | None] = Memo(model_ttl_s)
        self._popular: Memo[str | None, list[Candidate]] = Memo(model_ttl_s, size=1000)
        self._consents: Memo[uuid.UUID, bool] = Memo(min(model_ttl_s, CONSENT_TTL_S))

    async def personalised(self, customer_id: uuid.UUID) -> bool:
        """Whether this customer's consent allows behaviour-based recommendations."""
        return bool(await self._consents.fetch(customer_id, self._read_consent))

    async def _read_consent(self, customer_id: uuid.UUID) -> bool:
        return await personalisation_allowed(self.store.sessions, customer_id)

    def forget(self) -> None:
        """Drop what this process remembers of the stored model (after a build, in tests)."""
        for memo in (self._lists, self._popular, self._consents):
            memo.clear()

    async def _customer_list(self, customer_id: uuid.UUID) -> CustomerList | None:
        return await self._lists.fetch(customer_id, self.store.customer_list)

    async def _popular_list(self, category: str | None) -> list[Candidate]:
        return await self._popular.fetch(category, self._read_popular) or []

    async def _read_popular(self, category: str | None) -> list[Candidate]:
        return await self.store.popular(category, _POPULAR_POOL)

    async def recommend(
        self,
        customer_id: uuid.UUID,
        *,
        limit: int = 4,
        category: str | None = None,
        exclude_purchased: bool = True,
        personalised: bool,
        context: RecommendationContext | None = None,
    ) -> list[Recommendation]:
        limit = max(0, min(limit, MAX_LIMIT))
        context = context or RecommendationContext()
        stored = await self._customer_list(customer_id)
        sources: list[Sequence[Candidate]] = []
        if personalised:
            sources += [await self._from_context(context), stored.candidates if stored else ()]
        sources.append(await self._popular_list(category))
        excluded: set[str] = set()
        if exclude_purchased:
            excluded = set(stored.purchased if stored else ()) | set(context.purchase_history)
        return await self._in_stock(_wanted(sources, excluded, category), limit, category)

    async def _from_context(self, context: RecommendationContext) -> list[Candidate]:
        """Neighbours of the send-time history, each reason naming its strongest source."""
        weights = dict.fromkeys(context.browsing_history, "viewed_with")
        weights.update(dict.fromkeys(context.purchase_history, "bought_with"))
        if not weights:
            return []
        scores: dict[str, float] = {}
        best: dict[str, tuple[float, str]] = {}
        for source, neighbour, score in await self.store.neighbours(list(weights)):
            if neighbour in weights:
                continue
            weighted = score * _CONTEXT_WEIGHTS[weights[source]]
            scores[neighbour] = scores.get(neighbour, 0.0) + weighted
            if weighted > best.get(neighbour, (0.0, ""))[0]:
                best[neighbour] = (weighted, source)
        categories = await self.store.categories(list(scores))
        ranked = sorted(scores, key=lambda p: (-scores[p], p))
        return [
            Candidate(p, scores[p], categories.get(p), weights[best[p][1]], best[p][1])
            for p in ranked
        ]

    async def _in_stock(
        self, wanted: Iterator[Candidate], limit: int, category: str | None
    ) -> list[Recommendation]:
        chosen: list[Recommendation] = []
        batch = max(limit * 2, 8)
        while len(chosen) < limit and (part := list(islice(wanted, batch))):
            anchors = [c.anchor for c in part if c.anchor]
            products = await self.catalogue.products([c.product_id for c in part] + anchors)
            stock = await self.catalogue.stock(
                products[c.product_id] for c in part if c.product_id in products
            )
            for candidate in part:
                product = products.get(candidate.product_id)
                if product is None or stock.get(candidate.product_id, 0) <= 0:
                    continue
                found_category = candidate.category or product.category
                if category is not None and found_category != category:
                    continue
                chosen.append(
                    Recommendation(
                        product=product,
                        score=round(candidate.score, 6),
                        reason=_reason(candidate, found_category, products),
                        category=found_category,
                    )
                )
                if len(chosen) >= limit:
                    break
        return chosen


def open_recommender(
    sessions: async_sessionmaker[AsyncSession], federation: Federation, settings: Settings
) -> Recommender:
    """The serving side, on the app's sessions and the federation's shop and cache."""
    return Recommender(
        RecommendationStore(sessions),
        ProductCatalogue(federation, stock_ttl_s=settings.recs_stock_ttl_s),
        model_ttl_s=settings.recs_model_ttl_s,
    )


def _reason(candidate: Candidate, category: str | None, products: dict[str, Product]) -> str:
    anchor = products.get(candidate.anchor or "")
    if candidate.reason == "bought_with" and anchor is not None:
        return f"bought together with {anchor.title}"
    if candidate.reason == "viewed_with" and anchor is not None:
        return f"viewed together with {anchor.title}"
    if candidate.reason in ("popular_in", "bought_with", "viewed_with") and category:
        return f"popular in {category}"
    return "trending"
