"""Serving one customer's recommendations: a stored lookup, then filters.

Whatever model a build chose (``selection``), serving reads the same stored rows.
Candidates come, best first, from the customer's stored list (personalised only),
from the neighbours of what a send-time ``context`` says they just browsed or bought
(personalised only), and from popularity (a category's best sellers, or what is
trending). Then the business rules, the same for every model: one product once,
nothing already bought, the asked category, at most ``max_per_category`` of one
category, and only what the shop has in stock now (short-lived cache). Without
personalisation consent nothing behaviour-based is used, and every reason says
"popular" or "trending".

A ``strategy`` (an experiment's variant's, gateway/experiments/) chooses the candidates:
``model`` (the default) as above; ``item_to_item`` only the stored neighbours of what the
customer bought and the send-time context, then popularity; ``popularity`` only
popularity; ``none`` nothing (a holdout).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import NamedTuple

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from adapters.records import Product
from gateway.recommendations.catalogue import ProductCatalogue
from gateway.recommendations.consent import personalisation_allowed
from gateway.recommendations.memo import Memo
from gateway.recommendations.store import Candidate, CustomerList, RecommendationStore
from gateway.settings import Settings
from gateway.upstreams.federation import Federation

MAX_LIMIT = 50
TEMPLATE_LIMIT = 12  # what a template's `recommendations` holds; `limit:` slices it
_POPULAR_POOL = 100  # popular products read per request to fill after filtering
# A product bought just now says more than one viewed: its 2nd neighbour ranks with the
# viewed product's 1st.
_CONTEXT_WEIGHTS = {"viewed_with": 1.0, "bought_with": 2.0}
# A withdrawn consent takes effect within this many seconds on every instance.
CONSENT_TTL_S = 5.0
STRATEGIES = ("model", "item_to_item", "popularity", "none")
_ANCHORS = 50  # purchased products item-to-item starts from (the neighbour query's size)


@dataclass(frozen=True, slots=True)
class RecommendationContext:
    """What the caller knows at send time, newer than the last build (product ids)."""

    browsing_history: tuple[str, ...] = ()
    purchase_history: tuple[str, ...] = ()


class Recommendation(NamedTuple):
    """One recommended product. A named tuple, not a frozen dataclass: every served list
    is copied once with its tracking fields (gateway/experiments/served.py), and a
    tuple is made in one call where a frozen dataclass sets each field through
    ``object.__setattr__`` (four items: ~8 us of the request, most of what tracking
    cost it)."""

    product: Product
    score: float
    reason: str
    category: str | None = None
    # Once tracked (gateway/experiments/served.py): the served list's id, and the
    # product's link with its tracking parameter.
    list_id: str | None = None
    link: str | None = None

    @property
    def url(self) -> str | None:
        """The link to give out: the tracked one, else the product page."""
        return self.link or self.product.url


@dataclass(frozen=True, slots=True)
class Picks:
    """A customer's recommendations for a template: personalised (None without stored
    consent) and popular ones, so a render whose CRM withdrew consent uses the latter.
    ``shown`` is told which one a render's context gave the template (True: the
    personalised one), ``rendered`` that a render succeeded."""

    personal: tuple[Recommendation, ...] | None
    popular: tuple[Recommendation, ...]
    shown: Callable[[bool], None] | None = None
    rendered: Callable[[], None] | None = None


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
        self,
        store: RecommendationStore,
        catalogue: ProductCatalogue,
        *,
        model_ttl_s: float = 0.0,
        max_per_category: int = 0,
    ) -> None:
        self.store = store
        self.catalogue = catalogue
        self.max_per_category = max_per_category
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
        max_per_category: int | None = None,
        strategy: str = "model",
    ) -> list[Recommendation]:
        limit = max(0, min(limit, MAX_LIMIT))
        if strategy == "none":
            return []
        context = context or RecommendationContext()
        stored = await self._customer_list(customer_id)
        sources: list[Sequence[Candidate]] = []
        if personalised and strategy == "model":
            sources += [await self._from_context(context), stored.candidates if stored else ()]
        elif personalised and strategy == "item_to_item":
            bought = sorted(stored.purchased if stored else ())[:_ANCHORS]
            anchors = context.purchase_history + tuple(bought)
            sources.append(
                await self._from_context(RecommendationContext(context.browsing_history, anchors))
            )
        sources.append(await self._popular_list(category))
        excluded: set[str] = set()
        if exclude_purchased:
            excluded = set(stored.purchased if stored else ()) | set(context.purchase_history)
        cap = self.max_per_category if max_per_category is None else max_per_category
        return await self._in_stock(_wanted(sources, excluded, category), limit, category, cap)

    async def recommend_many(
        self,
        customers: Sequence[tuple[uuid.UUID, bool]],
        *,
        limit: int = TEMPLATE_LIMIT,
        strategies: Mapping[uuid.UUID, str] | None = None,
    ) -> dict[uuid.UUID, Picks]:
        """Recommendations for many customers at once (``(id, personalised)`` pairs, each
        with its strategy, ``model`` by default), as a batch of template renders needs
        them: one read of the stored lists for all, one of the neighbours of their
        purchases for those served item-to-item, one fetch of products and stock for all
        their candidates."""
        strategies = strategies or {}
        ids = [customer_id for customer_id, _ in customers]
        lists = await self._lists.fetch_many(ids, self.store.customer_lists)
        popular = await self._popular_list(None)
        related = await self._item_to_item_many(
            {
                customer_id: sorted(found.purchased)[:_ANCHORS]
                for customer_id, personalised in customers
                if personalised
                and strategies.get(customer_id) == "item_to_item"
                and (found := lists.get(customer_id)) is not None
            }
        )
        plans: dict[uuid.UUID, tuple[list[Candidate] | None, list[Candidate]]] = {}
        for customer_id, personalised in customers:
            strategy = strategies.get(customer_id, "model")
            stored = lists.get(customer_id)
            bought = set(stored.purchased) if stored else set()
            pool = limit * 3  # room for products out of stock
            own: tuple[Sequence[Candidate], ...] = (stored.candidates if stored else (), popular)
            if strategy == "item_to_item":
                own = (related.get(customer_id, ()), popular)
            plans[customer_id] = (
                list(islice(_wanted(own, bought, None), pool))
                if personalised and strategy in ("model", "item_to_item")
                else None,
                list(islice(_wanted((popular,), bought, None), pool)) if strategy != "none" else [],
            )
        wanted = {
            c.product_id: None
            for personal, common in plans.values()
            for c in (*(personal or ()), *common)
        }
        anchors = {c.anchor: None for p, _ in plans.values() for c in p or () if c.anchor}
        products = await self.catalogue.products([*wanted, *anchors])
        stock = await self.catalogue.stock(products[p] for p in wanted if p in products)
        picks: dict[uuid.UUID, Picks] = {}
        for customer_id, (personal, common) in plans.items():
            chosen = [
                tuple(self._filter(candidates, products, stock, limit, None, self.max_per_category))
                if candidates is not None
                else None
                for candidates in (personal, common)
            ]
            picks[customer_id] = Picks(chosen[0], chosen[1] or ())
        return picks

    async def _item_to_item_many(
        self, anchors: Mapping[uuid.UUID, Sequence[str]]
    ) -> dict[uuid.UUID, list[Candidate]]:
        """Each customer's neighbours of what they bought, from one read for them all."""
        every = sorted({product for bought in anchors.values() for product in bought})
        if not every:
            return {}
        by_product: dict[str, list[tuple[str, str, float]]] = {}
        for row in await self.store.neighbours(every):
            by_product.setdefault(row[0], []).append(row)
        categories = await self.store.categories(sorted({n for _, n, _ in _flat(by_product)}))
        return {
            customer_id: _fused(
                dict.fromkeys(bought, "bought_with"),
                [row for product in bought for row in by_product.get(product, ())],
                categories,
            )
            for customer_id, bought in anchors.items()
        }

    async def _from_context(self, context: RecommendationContext) -> list[Candidate]:
        """Neighbours of the send-time history, each reason naming its strongest source."""
        weights = dict.fromkeys(context.browsing_history, "viewed_with")
        weights.update(dict.fromkeys(context.purchase_history, "bought_with"))
        if not weights:
            return []
        rows = await self.store.neighbours(list(weights))
        categories = await self.store.categories(sorted({n for _, n, _ in rows}))
        return _fused(weights, rows, categories)

    async def _in_stock(
        self, wanted: Iterator[Candidate], limit: int, category: str | None, cap: int
    ) -> list[Recommendation]:
        chosen: list[Recommendation] = []
        per_category: Counter[str | None] = Counter()
        batch = max(limit * 2, 8)
        while len(chosen) < limit and (part := list(islice(wanted, batch))):
            anchors = [c.anchor for c in part if c.anchor]
            products = await self.catalogue.products([c.product_id for c in part] + anchors)
            stock = await self.catalogue.stock(
                products[c.product_id] for c in part if c.product_id in products
            )
            chosen += self._filter(
                part, products, stock, limit - len(chosen), category, cap, per_category
            )
        return chosen

    def _filter(
        self,
        candidates: Iterable[Candidate],
        products: dict[str, Product],
        stock: dict[str, int],
        limit: int,
        category: str | None,
        cap: int,
        per_category: Counter[str | None] | None = None,
    ) -> list[Recommendation]:
        """The candidates that pass the rules, in order, up to ``limit``: a known product,
        in stock, in the asked category, and (with no category asked) at most ``cap`` of
        one category when ``cap`` is set."""
        counts = per_category if per_category is not None else Counter()
        chosen: list[Recommendation] = []
        for candidate in candidates:
            if len(chosen) >= limit:
                break
            product = products.get(candidate.product_id)
            if product is None or stock.get(candidate.product_id, 0) <= 0:
                continue
            found_category = candidate.category or product.category
            if category is not None and found_category != category:
                continue
            if category is None and cap > 0 and counts[found_category] >= cap:
                continue
            counts[found_category] += 1
            chosen.append(
                Recommendation(
                    product=product,
                    score=round(candidate.score, 6),
                    reason=_reason(candidate, found_category, products),
                    category=found_category,
                )
            )
        return chosen


def open_recommender(
    sessions: async_sessionmaker[AsyncSession], federation: Federation, settings: Settings
) -> Recommender:
    """The serving side, on the app's sessions and the federation's shop and cache."""
    return Recommender(
        RecommendationStore(sessions),
        ProductCatalogue(federation, stock_ttl_s=settings.recs_stock_ttl_s),
        model_ttl_s=settings.recs_model_ttl_s,
        max_per_category=settings.recs_max_per_category,
    )


def _fused(
    weights: Mapping[str, str],
    rows: Iterable[tuple[str, str, float]],
    categories: Mapping[str, str | None],
) -> list[Candidate]:
    """The neighbours of the ``weights``' products (``viewed_with`` or ``bought_with``),
    best first, each reason naming its strongest source.

    Fused by rank, not by score: each product's n-th neighbour adds weight / n, so
    every product the caller names contributes whatever the stored model's scale
    (EASE, ALS and kNN score on scales of their own)."""
    by_source: dict[str, list[tuple[float, str]]] = {}
    for source, neighbour, score in rows:
        if neighbour not in weights:
            by_source.setdefault(source, []).append((score, neighbour))
    scores: dict[str, float] = {}
    best: dict[str, tuple[float, str]] = {}
    for source, found in by_source.items():
        ranked = sorted(found, key=lambda pair: (-pair[0], pair[1]))
        for rank, (_, neighbour) in enumerate(ranked, start=1):
            weighted = _CONTEXT_WEIGHTS[weights[source]] / rank
            scores[neighbour] = scores.get(neighbour, 0.0) + weighted
            if weighted > best.get(neighbour, (0.0, ""))[0]:
                best[neighbour] = (weighted, source)
    ranked_all = sorted(scores, key=lambda p: (-scores[p], p))
    return [
        Candidate(p, scores[p], categories.get(p), weights[best[p][1]], best[p][1])
        for p in ranked_all
    ]


def _flat(
    by_product: Mapping[str, list[tuple[str, str, float]]],
) -> Iterator[tuple[str, str, float]]:
    for rows in by_product.values():
        yield from rows


def _reason(candidate: Candidate, category: str | None, products: dict[str, Product]) -> str:
    """Words for people: what of theirs led here, or what is popular."""
    anchor = products.get(candidate.anchor or "")
    if candidate.reason == "bought_with" and anchor is not None:
        return f"because you bought {anchor.title}"
    if candidate.reason == "viewed_with" and anchor is not None:
        return f"because you viewed {anchor.title}"
    if candidate.reason in ("popular_in", "bought_with", "viewed_with") and category:
        return f"popular in {category}"
    return "trending"
