"""What each person likes: category weights shared by their orders and their browsing.

Orders and analytics events draw products through the same weights, so what a
person views predicts what they buy: recommendations built on these data have a
signal to find.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

from demo.people.catalogue import CATEGORIES, Product, catalogue
from demo.people.population import Person


@dataclass(frozen=True, slots=True)
class Taste:
    """Category weights, strongest first; the first one or two dominate."""

    categories: tuple[str, ...]
    weights: tuple[float, ...]

    @property
    def favourite(self) -> str:
        return self.categories[0]

    def pick_category(self, rng: random.Random) -> str:
        return rng.choices(self.categories, weights=self.weights)[0]

    def pick_product(self, rng: random.Random, category: str | None = None) -> Product:
        products = catalogue().by_category[category or self.pick_category(rng)]
        return products[rng.randrange(len(products))]


@lru_cache(maxsize=8192)
def taste(person: Person) -> Taste:
    """The person's taste, from its own generator so other data never shifts it."""
    rng = person.rng("taste")
    ranked = list(CATEGORIES)
    rng.shuffle(ranked)
    # Geometric-ish decay: the favourite gets about half the weight.
    weights = tuple(round(0.5**rank + 0.02, 4) for rank in range(len(ranked)))
    return Taste(categories=tuple(ranked), weights=weights)
