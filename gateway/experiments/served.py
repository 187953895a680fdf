"""Serving a recommendation list as something to measure: the running experiment's
variant picks the strategy, the list gets an id, each item's link the signed tracking
parameter naming that list and position, and the list is recorded as an impression.

Every way a list leaves the gateway comes through here: ``Customer.recommendations``
(``graphql``), ``POST /api/recommendations`` (``api``) and a template's
``recommendations`` (``render``: recorded for the list the render actually used).

The strategy recorded is the one served: a customer without personalisation consent
is served popularity whatever their variant says; their variant is recorded all the
same, so results compare the variants as assigned (intention to treat).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from operator import attrgetter

from gateway.experiments.impressions import ImpressionLog, items_json
from gateway.experiments.running import Assignment, Experiments
from gateway.experiments.tracking import Tracker
from gateway.recommendations.serving import (
    Picks,
    Recommendation,
    RecommendationContext,
    Recommender,
)

_new = tuple.__new__
# Each item's product's link and id, read in C (no Python frame per item, as a
# comprehension makes on Python 3.11).
_PRODUCT_URL = attrgetter("product.url")
_PRODUCT_ID = attrgetter("product.external_id")
DEFAULT_STRATEGY = "model"  # outside an experiment: the model the last build selected


@dataclass(frozen=True, slots=True)
class ServedList:
    """One served list: ``list_id`` is None when impressions are turned off. ``links``
    holds each item's link to give out, in order: with its tracking parameter, or the
    product page when impressions are off (the items themselves are not copied with
    their tracking fields, as a render's are: a copy per item was ~1 us of a request)."""

    list_id: str | None
    strategy: str
    experiment: str | None
    variant: str | None
    items: tuple[Recommendation, ...]
    links: tuple[str | None, ...]


def served_strategy(planned: str, personalised: bool) -> str:
    """What a customer is actually served under a variant's ``planned`` strategy."""
    if planned in ("none", "popularity") or personalised:
        return planned
    return "popularity"  # no consent to profile them: popular products only


class ServedRecommendations:
    def __init__(
        self,
        recommender: Recommender,
        experiments: Experiments,
        impressions: ImpressionLog,
        tracker: Tracker,
    ) -> None:
        self.recommender = recommender
        self.experiments = experiments
        self.impressions = impressions
        self.tracker = tracker

    async def for_customer(
        self,
        customer_id: uuid.UUID,
        *,
        personalised: bool,
        surface: str,
        send_id: str | None = None,
        limit: int = 4,
        category: str | None = None,
        exclude_purchased: bool = True,
        context: RecommendationContext | None = None,
        max_per_category: int | None = None,
    ) -> ServedList:
        assignment = await self.experiments.assignment(customer_id)
        planned = assignment.variant.strategy if assignment else DEFAULT_STRATEGY
        items = await self.recommender.recommend(
            customer_id,
            limit=limit,
            category=category,
            exclude_purchased=exclude_purchased,
            personalised=personalised,
            context=context,
            max_per_category=max_per_category,
            strategy=planned,
        )
        strategy = served_strategy(planned, personalised)
        return self._served(customer_id, surface, send_id, strategy, assignment, items)

    async def for_templates(
        self, customers: Sequence[tuple[uuid.UUID, bool]], send_id: str | None = None
    ) -> dict[uuid.UUID, Picks]:
        """Each customer's picks for a template (``(id, personalised)`` pairs), tracked;
        the list a render uses is recorded when it uses it (``Picks.shown``)."""
        assignments = await self.experiments.assignments([c for c, _ in customers])
        found = await self.recommender.recommend_many(
            customers,
            strategies={c: a.variant.strategy for c, a in assignments.items()},
        )
        return {
            customer_id: self._tracked_picks(
                customer_id, picks, assignments.get(customer_id), send_id
            )
            for customer_id, picks in found.items()
        }

    def _tracked_picks(
        self,
        customer_id: uuid.UUID,
        picks: Picks,
        assignment: Assignment | None,
        send_id: str | None,
    ) -> Picks:
        planned = assignment.variant.strategy if assignment else DEFAULT_STRATEGY
        lists = {
            personal: self._prepared(items)
            for personal, items in ((True, picks.personal), (False, picks.popular))
            if items is not None
        }
        chosen: list[bool] = []  # the list the context gave the template
        recorded: list[bool] = []

        def shown(personal: bool) -> None:
            if not chosen and personal in lists:
                chosen.append(personal)

        def rendered() -> None:
            """Records the chosen list once a render succeeded (a failed one showed
            nothing), with every pick the template was given: the renders of one
            request share the list, each printing what its template chose (one its
            first link, another all twelve), so the list's items are all of them, at
            the positions every body's links name. Recorded with what the first body
            printed, the others' clicks found no product at their position."""
            if recorded or not chosen or not self.impressions.enabled:
                return  # once per request: the same customer rendered twice is one list
            recorded.append(True)
            list_id, items = lists[chosen[0]]
            strategy = planned if chosen[0] else served_strategy(planned, False)
            self._record(list_id, customer_id, "render", send_id, strategy, assignment, items)

        personal = lists.get(True)
        return Picks(
            personal[1] if personal else None,
            lists[False][1] if False in lists else (),
            shown,
            rendered,
        )

    def _served(
        self,
        customer_id: uuid.UUID,
        surface: str,
        send_id: str | None,
        strategy: str,
        assignment: Assignment | None,
        items: Sequence[Recommendation],
    ) -> ServedList:
        urls = list(map(_PRODUCT_URL, items))
        experiment, variant = (
            (assignment.experiment.name, assignment.variant.name) if assignment else (None, None)
        )
        if self.impressions.enabled:
            list_id, links = self.tracker.new_list(urls)
            # The row queued here, not through ``_record``: a Python call fewer, and the
            # customer as its integer (``Served``), on the path every list takes.
            self.impressions.queue(
                (
                    list_id,
                    customer_id.int,
                    time.time_ns(),
                    surface,
                    strategy,
                    experiment,
                    variant,
                    send_id,
                    items_json(map(_PRODUCT_ID, items)),
                )
            )
        else:
            list_id, links = None, urls
        return ServedList(list_id, strategy, experiment, variant, tuple(items), tuple(links))

    def _prepared(
        self, items: Sequence[Recommendation]
    ) -> tuple[str | None, tuple[Recommendation, ...]]:
        """A new list id and the items with their links tagged (untouched when off)."""
        if not self.impressions.enabled:
            return None, tuple(items)
        list_id, links = self.tracker.new_list(list(map(_PRODUCT_URL, items)))
        # tuple.__new__, not Recommendation(...): the named tuple's own __new__ is a
        # Python function, a call more per item on the hot path.
        return list_id, tuple(
            [
                _new(Recommendation, (item[0], item[1], item[2], item[3], list_id, link))
                for item, link in zip(items, links, strict=True)
            ]
        )

    def _record(
        self,
        list_id: str | None,
        customer_id: uuid.UUID,
        surface: str,
        send_id: str | None,
        strategy: str,
        assignment: Assignment | None,
        items: Sequence[Recommendation],
    ) -> None:
        if list_id is None:
            return
        # A plain tuple in the table's column order, the time as the clock reads it and
        # the customer as its integer (a row the collector need not follow: impressions.py):
        # the writer (off the request path) makes the row of it.
        self.impressions.record(
            (
                list_id,
                customer_id.int,
                time.time_ns(),
                surface,
                strategy,
                assignment.experiment.name if assignment else None,
                assignment.variant.name if assignment else None,
                send_id,
                items_json(map(_PRODUCT_ID, items)),
            )
        )
