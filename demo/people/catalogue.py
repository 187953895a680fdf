"""The sample shop's product catalogue: about 200 products over a few categories.

Built once from a fixed seed, independent of the population size, so a product
id means the same product in the commerce sample, the analytics events and any
recommendation computed from them.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from demo.people.population import demo_epoch

CATALOGUE_SIZE = 200
LOCATION_ID = 61_000_000_001
# Reserved example domains: realistic URLs that never leave the machine.
SHOP_URL = "https://shop.example"
IMAGE_URL = "https://images.shop.example/products"

_SEED = "catalogue:v1"
# Category -> (price range, product nouns). The nouns make titles readable in
# the demo; the price ranges make order totals plausible per category.
_CATEGORIES: dict[str, tuple[tuple[int, int], tuple[str, ...]]] = {
    "Shoes": (
        (45, 180),
        (
            "Trail Runner",
            "Canvas Sneaker",
            "Leather Loafer",
            "Chelsea Boot",
            "Slide Sandal",
            "Court Shoe",
            "Hiking Boot",
        ),
    ),
    "Apparel": (
        (15, 140),
        (
            "Merino Sweater",
            "Oxford Shirt",
            "Denim Jacket",
            "Linen Trousers",
            "Cotton Tee",
            "Rain Parka",
            "Knit Cardigan",
        ),
    ),
    "Accessories": (
        (10, 120),
        (
            "Leather Belt",
            "Wool Beanie",
            "Canvas Tote",
            "Silk Scarf",
            "Card Wallet",
            "Sunglasses",
            "Watch Strap",
        ),
    ),
    "Home": (
        (12, 160),
        (
            "Ceramic Vase",
            "Linen Throw",
            "Scented Candle",
            "Oak Serving Board",
            "Wool Rug",
            "Table Lamp",
            "Cushion Cover",
        ),
    ),
    "Beauty": (
        (8, 70),
        (
            "Face Serum",
            "Hand Cream",
            "Lip Balm",
            "Clay Mask",
            "Body Wash",
            "Eau de Parfum",
            "Night Cream",
        ),
    ),
    "Outdoors": (
        (20, 260),
        (
            "Trekking Poles",
            "Camping Stove",
            "Dry Bag",
            "Sleeping Mat",
            "Headlamp",
            "Daypack",
            "Insulated Bottle",
        ),
    ),
    "Kitchen": (
        (9, 150),
        (
            "Chef's Knife",
            "Cast Iron Pan",
            "Pour-over Kettle",
            "Stoneware Mug",
            "Spice Grinder",
            "Salad Bowl",
            "Linen Apron",
        ),
    ),
    "Sports": (
        (12, 220),
        (
            "Yoga Mat",
            "Running Vest",
            "Resistance Bands",
            "Tennis Racket",
            "Cycling Gloves",
            "Swim Goggles",
            "Kettlebell",
        ),
    ),
}
CATEGORIES: tuple[str, ...] = tuple(_CATEGORIES)
_ADJECTIVES = (
    "Classic",
    "Everyday",
    "Lightweight",
    "Heritage",
    "Urban",
    "Essential",
    "Nordic",
    "Coastal",
    "Alpine",
    "Studio",
    "Weekend",
    "Premium",
)
_COLOURS = ("Black", "Navy", "Olive", "Sand", "Rust", "Stone", "Forest", "Charcoal", "Ivory")
_VENDORS = (
    "Northwind Goods",
    "Bluebird & Co",
    "Fieldstone",
    "Harbor Lane",
    "Copperleaf",
    "Tidewater Supply",
)


@dataclass(frozen=True, slots=True)
class Product:
    """One product with its single variant (the sample shop sells no sizes)."""

    id: int
    title: str
    handle: str
    category: str
    vendor: str
    tags: tuple[str, ...]
    price: Decimal
    sku: str
    variant_id: int
    inventory_item_id: int
    initial_stock: int
    created_at: datetime
    updated_at: datetime

    @property
    def url(self) -> str:
        return f"{SHOP_URL}/products/{self.handle}"

    @property
    def image_url(self) -> str:
        return f"{IMAGE_URL}/{self.handle}.jpg"


@dataclass(frozen=True, slots=True)
class Catalogue:
    """All products, indexed for the lookups the services make per request."""

    products: tuple[Product, ...]
    by_id: dict[int, Product]
    by_inventory_item: dict[int, Product]
    by_category: dict[str, tuple[Product, ...]]


def _product(index: int, rng: random.Random, epoch: datetime) -> Product:
    category = CATEGORIES[index % len(CATEGORIES)]
    (low, high), nouns = _CATEGORIES[category]
    title = f"{rng.choice(_ADJECTIVES)} {rng.choice(nouns)} - {rng.choice(_COLOURS)}"
    handle = f"{re.sub(r'[^a-z0-9]+', '-', title.lower()).strip('-')}-{index + 1}"
    # Prices end in .00 or .95 or .99 like a real shop's.
    price = Decimal(rng.randrange(low, high)) + Decimal(rng.choice(("0.00", "0.95", "0.99")))
    # About one product in ten is sold out, so stock-aware recommendations matter.
    stock = 0 if rng.random() < 0.1 else rng.randrange(1, 250)
    created_at = epoch - timedelta(days=rng.randrange(60, 900), seconds=rng.randrange(86400))
    updated_at = min(epoch, created_at + timedelta(days=rng.randrange(0, 120)))
    return Product(
        id=8_100_000_000_000 + index * 17,
        title=title,
        handle=handle,
        category=category,
        vendor=rng.choice(_VENDORS),
        tags=tuple(sorted({category.lower(), rng.choice(("new", "bestseller", "sale", "eco"))})),
        price=price,
        sku=f"{category[:3].upper()}-{index + 1:04d}",
        variant_id=44_000_000_000_000 + index * 19,
        inventory_item_id=46_000_000_000_000 + index * 23,
        initial_stock=stock,
        created_at=created_at,
        updated_at=updated_at,
    )


def catalogue(epoch: datetime | None = None) -> Catalogue:
    """The shop's catalogue, dated back from ``epoch`` (default ``demo_epoch()``)."""
    return _catalogue(demo_epoch() if epoch is None else epoch)


@lru_cache(maxsize=2)
def _catalogue(epoch: datetime) -> Catalogue:
    rng = random.Random(_SEED)
    products = tuple(_product(index, rng, epoch) for index in range(CATALOGUE_SIZE))
    by_category = {
        category: tuple(p for p in products if p.category == category) for category in CATEGORIES
    }
    return Catalogue(
        products=products,
        by_id={p.id: p for p in products},
        by_inventory_item={p.inventory_item_id: p for p in products},
        by_category=by_category,
    )
