"""A seeded generator of realistic live offer traffic (pure: no I/O, no clock).

Each record is one of four lifecycle kinds:

- ``new``: a new open offer — office at a populated place (:mod:`.places`: every continent,
  weighted by the density of populated places), a category drawn
  from a skewed (Zipf-like) distribution over the 7 WTTJ categories, a contract type drawn
  with the public data set's frequencies;
- ``resend``: an open offer sent again unchanged (producers re-send; counts must not move);
- ``move``: an open offer upserted with a new location or a new category;
- ``close``: an open offer closed (``op: "delete"``); it leaves the open set.

The first record is always ``new``; every later record picks its kind with the configured
:class:`Lifecycle` shares (the rest are ``new``). When no offer is open, the record is ``new``.

Same seed + same lifecycle + same places table → the same stream, record for record.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum

from msgspec.structs import replace

from jobpulse.errors import UsageError
from jobpulse.offer import Offer, Op
from jobpulse.producer.places import Place, PlaceSampler

#: The WTTJ categories, most frequent first (ranking of the public data set's offers).
CATEGORIES: tuple[str, ...] = (
    "Business",
    "Tech",
    "Marketing / Comm'",
    "Retail",
    "Admin",
    "Créa",
    "Conseil",
)
#: Zipf exponent: P(rank k) ∝ 1 / k**s (s = 1 gives Business ≈ 39 %, Conseil ≈ 5 %).
ZIPF_EXPONENT = 1.0
#: Share of new offers without a category (the public data has 1.4 % without a profession).
NO_CATEGORY_SHARE = 0.01
#: Share of new offers without an office location (0.8 % in the public data).
NO_LOCATION_SHARE = 0.01

#: Contract types with their counts in the public data set (``technical-test-jobs.csv``).
CONTRACT_TYPES: tuple[tuple[str, int], ...] = (
    ("FULL_TIME", 3091),
    ("INTERNSHIP", 1292),
    ("APPRENTICESHIP", 423),
    ("TEMPORARY", 211),
    ("FREELANCE", 38),
    ("VIE", 10),
    ("PART_TIME", 4),
)

#: A few job titles per category, for readable names.
TITLES: dict[str, tuple[str, ...]] = {
    "Business": ("Account Executive", "Business Developer", "Sales Manager"),
    "Tech": ("Software Engineer", "Data Engineer", "DevOps Engineer", "Product Manager"),
    "Marketing / Comm'": ("Growth Marketer", "Community Manager", "Content Manager"),
    "Retail": ("Store Manager", "Sales Associate", "Visual Merchandiser"),
    "Admin": ("Office Manager", "Accountant", "HR Assistant"),
    "Créa": ("UX Designer", "Art Director", "Motion Designer"),
    "Conseil": ("Consultant", "Strategy Analyst", "Project Manager"),
}
_UNTITLED = ("Generalist", "Team Member")


class Kind(StrEnum):
    NEW = "new"
    RESEND = "resend"
    MOVE = "move"
    CLOSE = "close"


@dataclass(frozen=True)
class Lifecycle:
    """Shares of later records that re-send, move or close an open offer (rest: new)."""

    resend_share: float = 0.05
    move_share: float = 0.05
    close_share: float = 0.20

    def __post_init__(self) -> None:
        for name in ("resend_share", "move_share", "close_share"):
            share = getattr(self, name)
            if not 0.0 <= share <= 1.0:
                flag = "--" + name.replace("_", "-")
                raise UsageError(f"{flag} must be between 0 and 1, got {share}")
        if self.resend_share + self.move_share + self.close_share > 1.0 + 1e-9:
            raise UsageError(
                "--resend-share + --move-share + --close-share must not exceed 1 "
                f"(got {self.resend_share + self.move_share + self.close_share:g})"
            )

    @property
    def new_share(self) -> float:
        return max(0.0, 1.0 - self.resend_share - self.move_share - self.close_share)


@dataclass(frozen=True, slots=True)
class Record:
    """One generated record: its lifecycle kind and the offer message to send."""

    kind: Kind
    offer: Offer


def zipf_weights(n: int, exponent: float = ZIPF_EXPONENT) -> list[float]:
    """Normalised weights 1/k**s for ranks 1..n."""
    raw = [1.0 / (rank**exponent) for rank in range(1, n + 1)]
    total = sum(raw)
    return [w / total for w in raw]


class _OpenOffers:
    """The open offers, with O(1) uniform pick and removal (swap with the last)."""

    def __init__(self) -> None:
        self._offers: list[Offer] = []
        self._index: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._offers)

    def add(self, offer: Offer) -> None:
        self._index[offer.id] = len(self._offers)
        self._offers.append(offer)

    def replace(self, offer: Offer) -> None:
        self._offers[self._index[offer.id]] = offer

    def pick(self, rng: random.Random) -> Offer:
        return self._offers[rng.randrange(len(self._offers))]

    def remove(self, offer_id: str) -> None:
        position = self._index.pop(offer_id)
        last = self._offers.pop()
        if position < len(self._offers):
            self._offers[position] = last
            self._index[last.id] = position


class SyntheticStream:
    """An endless, reproducible stream of :class:`Record` (iterate it; slice with islice)."""

    def __init__(
        self,
        places: Sequence[Place],
        *,
        seed: int,
        lifecycle: Lifecycle | None = None,
        id_prefix: str | None = None,
    ) -> None:
        self.places = PlaceSampler(places)
        self.seed = seed
        self.lifecycle = lifecycle or Lifecycle()
        #: Ids are ``syn-<seed>-<n>``: different seeds never collide on one topic.
        self.id_prefix = id_prefix if id_prefix is not None else f"syn-{seed}-"
        self._category_cum = list(itertools.accumulate(zipf_weights(len(CATEGORIES))))
        self._contract_cum = list(itertools.accumulate(float(n) for _, n in CONTRACT_TYPES))
        life = self.lifecycle
        self._kind_cum = list(
            itertools.accumulate((life.resend_share, life.move_share, life.close_share))
        )

    def __iter__(self) -> Iterator[Record]:
        rng = random.Random(self.seed)
        open_offers = _OpenOffers()
        kinds = (Kind.RESEND, Kind.MOVE, Kind.CLOSE)
        for number in itertools.count():
            kind = Kind.NEW
            if number and len(open_offers):
                slot = bisect.bisect_right(self._kind_cum, rng.random())
                kind = kinds[slot] if slot < len(kinds) else Kind.NEW
            if kind is Kind.NEW:
                offer = self._new_offer(rng, f"{self.id_prefix}{number}")
                open_offers.add(offer)
            elif kind is Kind.RESEND:
                offer = open_offers.pick(rng)
            elif kind is Kind.MOVE:
                offer = self._moved(rng, open_offers.pick(rng))
                open_offers.replace(offer)
            else:
                offer = Offer(id=open_offers.pick(rng).id, op=Op.DELETE)
                open_offers.remove(offer.id)
            yield Record(kind, offer)

    # -- drawing ----------------------------------------------------------------------
    def _category(self, rng: random.Random) -> str:
        return rng.choices(CATEGORIES, cum_weights=self._category_cum)[0]

    def _new_offer(self, rng: random.Random, offer_id: str) -> Offer:
        category = None if rng.random() < NO_CATEGORY_SHARE else self._category(rng)
        place = None if rng.random() < NO_LOCATION_SHARE else self.places.pick(rng)
        contract = rng.choices(CONTRACT_TYPES, cum_weights=self._contract_cum)[0][0]
        titles = TITLES.get(category or "", _UNTITLED)
        title = titles[rng.randrange(len(titles))]
        return Offer(
            id=offer_id,
            category=category,
            latitude=place.latitude if place else None,
            longitude=place.longitude if place else None,
            name=f"{title} — {place.name}" if place else f"{title} (remote)",
            contract_type=contract,
        )

    def _moved(self, rng: random.Random, offer: Offer) -> Offer:
        """The offer with a new office (half the moves) or a different category."""
        if rng.random() < 0.5:
            place = self.places.pick(rng)
            return replace(offer, latitude=place.latitude, longitude=place.longitude)
        others = [c for c in CATEGORIES if c != offer.category]
        return replace(offer, category=others[rng.randrange(len(others))])
