"""Forming customers from scored pairs: strongest pairs first, clusters judged whole.

A pair above the match probability joins its two records' clusters only if the
clusters agree as wholes: every pair across them is scored (their records are all in
memory: the batch, the candidates and the candidates' customers), and one pair far
below the review band (two people who share a name and nothing else) keeps them
apart, however strong the link that proposed the join.  Two stored customers are
joined only when the pairs across them are, on average, matches themselves: merging
two existing profiles takes more than one strong link.  A pair a person marked as
different people (``KEEP_APART``) is never joined, directly or through others.  A
join refused, a merge a name vetoes, and a pair in the review band become reviews.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING

from gateway.identity.config import IdentityConfig
from gateway.identity.scoring.comparison import Comparable, Scorer, probability, weight_of

if TYPE_CHECKING:
    from gateway.identity.linkage.linker import KnownState, Review

Ref = int  # a stored identity id (> 0), or -(batch position + 1)
Edge = tuple[float, Ref, Ref, bool]  # (weight, open batch record, candidate, vetoed)


class _Group:
    """A cluster in the making (by union-find: ``parent`` is itself at the root)."""

    __slots__ = ("identities", "members", "owner", "parent", "size", "stored")

    def __init__(self, index: int, owner: uuid.UUID, stored: bool) -> None:
        self.parent = index
        self.owner = owner  # the customer id it will have, unless joined to a stored one
        self.members: list[Ref] = []
        self.identities: set[int] = set()  # stored identity ids, for never-link pairs
        self.size = 0  # identities the customer would have
        self.stored: list[uuid.UUID] = [owner] if stored else []  # stored customers in it


class Clusters:
    def __init__(
        self,
        scorer: Scorer,
        config: IdentityConfig,
        state: KnownState,
        provisional: Sequence[tuple[uuid.UUID, int | None, bool, bool]],
        fields: Sequence[Comparable],
    ) -> None:
        """``provisional``: per batch record, its owner after the deterministic rules, the
        stored identity it updates, whether that owner is a new customer, and whether the
        record is a new identity (it adds one to its customer's count)."""
        self._scorer = scorer
        self._config = config
        self._never = state.never
        self._sizes = state.sizes
        self._floor = weight_of(config.join_floor_probability)
        self._provisional = provisional
        self._batch = fields
        # Groups are made when a pair first touches them: most records of a big import
        # are in no pair at all, and cost nothing here.
        self._groups: list[_Group] = []
        self._index: dict[uuid.UUID, int] = {}
        self._group_of: dict[Ref, int] = {}
        self._weights: dict[tuple[Ref, Ref], tuple[float, bool]] = {}
        self._evidence: dict[Ref, tuple[float, Ref]] = {}
        self._refused: dict[tuple[Ref, Ref], str] = {}
        self._merged: dict[Ref, list[uuid.UUID]] = {}
        self._reviews: dict[Ref, Review] = {}
        self._fresh = {owner for owner, _, fresh, _ in provisional if fresh}
        self._stored_fields: dict[Ref, Comparable] = {}
        self._stored_owner: dict[Ref, uuid.UUID] = {}
        self._stored_members: dict[uuid.UUID, list[Ref]] = {}
        for customer, members in state.members.items():
            for candidate in members:
                self._remember(candidate.ref, customer, candidate.fields)
        for members in state.blocks.values():
            for candidate in members:
                if candidate.ref not in self._stored_owner:
                    self._remember(candidate.ref, candidate.customer_id, candidate.fields)
        self._batch_members: dict[uuid.UUID, list[int]] = {}
        for position, (owner, *_) in enumerate(provisional):
            self._batch_members.setdefault(owner, []).append(position)

    def _remember(self, ref: Ref, owner: uuid.UUID, fields: Comparable) -> None:
        self._stored_fields[ref] = fields
        self._stored_owner[ref] = owner
        self._stored_members.setdefault(owner, []).append(ref)

    def _fields(self, node: Ref) -> Comparable:
        return self._batch[-node - 1] if node < 0 else self._stored_fields[node]

    def _first_owner(self, node: Ref) -> uuid.UUID:
        return self._provisional[-node - 1][0] if node < 0 else self._stored_owner[node]

    def _group_for(self, owner: uuid.UUID) -> int:
        """The group of a customer (stored, or new in this batch) with all its records."""
        index = self._index.get(owner)
        if index is not None:
            return index
        index = self._index[owner] = len(self._groups)
        group = _Group(index, owner, owner not in self._fresh)
        self._groups.append(group)
        group.size = self._sizes.get(owner, 0)
        for ref in self._stored_members.get(owner, ()):
            group.members.append(ref)
            group.identities.add(ref)
            self._group_of[ref] = index
        for position in self._batch_members.get(owner, ()):
            _, identity_id, _, new_identity = self._provisional[position]
            group.members.append(-(position + 1))
            self._group_of[-(position + 1)] = index
            if identity_id is not None:
                group.identities.add(identity_id)
            if new_identity:
                group.size += 1
        return index

    def _root(self, node: Ref) -> _Group:
        groups = self._groups
        index = self._group_of.get(node)
        if index is None:
            index = self._group_for(self._first_owner(node))
        while groups[index].parent != index:
            groups[index].parent = groups[groups[index].parent].parent  # path halving
            index = groups[index].parent
        return groups[index]

    def _weight(self, a: Ref, b: Ref) -> tuple[float, bool]:
        key = (a, b) if a < b else (b, a)
        found = self._weights.get(key)
        if found is None:
            found = self._weights[key] = self._scorer.weigh(self._fields(a), self._fields(b))
        return found

    def join(self, edges: list[Edge]) -> None:
        match = self._scorer.match_weight
        for weight, a, b, vetoed in edges:
            self._weights[(a, b) if a < b else (b, a)] = (weight, vetoed)
        for weight, a, b, vetoed in sorted(edges, key=lambda e: e[0], reverse=True):
            if weight < match or vetoed:
                continue
            left, right = self._root(a), self._root(b)
            if left is right:
                continue
            refusal = self._refusal(left, right)
            if refusal is not None:
                self._refused[(a, b)] = refusal
                continue
            self._union(left, right, weight, a, b)
        self._collect_reviews(edges)

    def _kept_apart(self, left: _Group, right: _Group) -> bool:
        never = self._never
        return bool(never) and any(
            (min(x, y), max(x, y)) in never for x in left.identities for y in right.identities
        )

    def _refusal(self, left: _Group, right: _Group) -> str | None:
        """Why these two clusters must not be joined, or None."""
        if self._kept_apart(left, right):
            return "kept_apart"
        if left.size + right.size > self._config.max_identities_per_customer:
            return "identity_limit"
        if len(left.members) == 1 and len(right.members) == 1:
            return None  # the proposing pair is the only one across
        pairs = [(x, y) for x in left.members for y in right.members]
        cross = [self._weight(x, y) for x, y in pairs]
        if left.stored and right.stored:
            # Two existing customers: the pairs across them must be matches on average.
            mean = sum(probability(w) for w, _ in cross) / len(cross)
            if any(vetoed for _, vetoed in cross) or mean < self._scorer.model.match_probability:
                return "conflict"
            return None
        # A pair with (almost) nothing to compare is no evidence either way.
        if any(
            w < self._floor and _overlap(self._fields(x), self._fields(y)) >= 2
            for (w, _), (x, y) in zip(cross, pairs, strict=True)
        ):
            return "conflict"
        return None

    def _union(self, left: _Group, right: _Group, weight: float, a: Ref, b: Ref) -> None:
        if self._root(a) is not left:
            a, b = b, a  # a in left, b in right
        # The root that stays is a stored customer's when there is one, the bigger one
        # when both are: the merged profile keeps the id most systems already know.
        if (not right.stored, -right.size) < (not left.stored, -left.size):
            left, right, a, b = right, left, b, a
        if left.stored and right.stored:
            self._merged.setdefault(a if a < 0 else b, []).extend(right.stored)
        chance = probability(weight)
        # Every batch record joins through this pair: its own end, or the end it came with.
        for node in left.members:
            if node < 0 and node not in self._evidence:
                self._evidence[node] = (chance, b)
        for node in right.members:
            if node < 0 and node not in self._evidence:
                self._evidence[node] = (chance, a)
        right.parent = left.parent
        left.members += right.members
        left.identities |= right.identities
        left.size += right.size
        left.stored += right.stored

    def _collect_reviews(self, edges: list[Edge]) -> None:
        from gateway.identity.linkage.linker import Review

        match = self._scorer.match_weight
        best: dict[Ref, tuple[float, Ref, str]] = {}
        for weight, a, b, vetoed in edges:
            left, right = self._root(a), self._root(b)
            if left is right or self._kept_apart(left, right):
                continue
            reason = self._refused.get((a, b)) or (
                "evidence" if vetoed and weight >= match else "score"
            )
            if a not in best or weight > best[a][0]:
                best[a] = (weight, b, reason)
        for node, (weight, other, reason) in best.items():
            score = self._scorer.score(self._fields(node), self._fields(other))
            self._reviews[node] = Review(
                self.owner_of(other), probability(weight), reason, other, score.levels
            )

    # What the linker asks once the clusters are formed.

    def owner_of(self, node: Ref) -> uuid.UUID:
        if node not in self._group_of:
            return self._first_owner(node)  # in no pair: where the keys put it
        root = self._root(node)
        return root.stored[0] if root.stored else root.owner

    def is_stored(self, owner: uuid.UUID) -> bool:
        return owner not in self._fresh

    def evidence_of(self, node: Ref) -> tuple[float, Ref] | None:
        return self._evidence.get(node)

    def review_of(self, node: Ref) -> Review | None:
        return self._reviews.get(node)

    def merged_by(self, node: Ref) -> tuple[uuid.UUID, ...]:
        return tuple(self._merged.get(node, ()))


def _overlap(a: Comparable, b: Comparable) -> int:
    """How many fields two records both have."""
    return sum(1 for x, y in zip(a, b, strict=True) if x is not None and y is not None)
