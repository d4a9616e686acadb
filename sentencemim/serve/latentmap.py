"""A map of the latent space: the posterior means of an indexed corpus (one sentence
a line, as `smim encode` / `smim neighbors --index` read it) projected to 2-D.

Projection: PCA by numpy's SVD of the centred means (the default, deterministic: each
component's sign is fixed so that its largest loading is positive), or UMAP when the
`umap` extra (umap-learn) is installed and asked for (`auto` takes UMAP when it is
importable and the map has at least UMAP_MIN_POINTS points). At most `max_points`
sentences (a fixed random subset, seeded) are drawn on the map; nearest-neighbour
search always covers the whole index.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError

PROJECTIONS = ("auto", "pca", "umap")
UMAP_MIN_POINTS = 20


@dataclass
class LatentMap:
    sentences: list[str]  # the whole index
    codes: np.ndarray  # (N, d) posterior means of the whole index
    shown: np.ndarray  # (n,) rows of the index drawn on the map
    xy: np.ndarray  # (n, 2) their coordinates
    method: str  # "pca" | "umap"
    what: str  # a label for the page
    center: np.ndarray | None = None  # PCA
    components: np.ndarray | None = None  # PCA (2, d)
    explained: list = field(default_factory=list)  # PCA: share of variance of each axis
    reducer: object = None  # UMAP

    def project(self, codes) -> np.ndarray:
        """2-D coordinates (n, 2) of further codes (n, d), on the same axes."""
        codes = np.atleast_2d(np.asarray(codes, dtype=np.float64))
        if self.method == "pca":
            return (codes - self.center) @ self.components.T
        return np.asarray(self.reducer.transform(codes), dtype=np.float64)

    def position(self) -> dict:
        """Index row -> position on the map, for the rows that are drawn."""
        return {int(r): i for i, r in enumerate(self.shown)}


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list]:
    """(center (d,), components (2, d), coordinates (n, 2), explained variance shares)."""
    x = np.asarray(x, dtype=np.float64)
    center = x.mean(0)
    xc = x - center
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    comps = np.zeros((2, x.shape[1]))
    k = min(2, vt.shape[0])
    comps[:k] = vt[:k]
    for i in range(k):  # a deterministic sign: the largest loading is positive
        if comps[i, np.argmax(np.abs(comps[i]))] < 0:
            comps[i] *= -1
    total = float((s ** 2).sum())
    explained = [float(s[i] ** 2 / total) if total > 0 and i < len(s) else 0.0 for i in range(2)]
    return center, comps, xc @ comps.T, explained


def build_map(sentences: list[str], codes: np.ndarray, method: str = "auto", max_points: int = 5000,
              seed: int = 0) -> LatentMap:
    if method not in PROJECTIONS:
        raise UserError(f"unknown projection {method!r}; choose one of {', '.join(PROJECTIONS)}")
    if max_points < 1:
        raise UserError(f"--map-points must be a positive integer, got {max_points}")
    n = len(sentences)
    shown = np.arange(n) if n <= max_points else np.sort(np.random.default_rng(seed).permutation(n)[:max_points])
    x = np.asarray(codes, dtype=np.float64)[shown]
    umap = None
    if method in ("auto", "umap"):
        try:
            import umap  # noqa: F811  (the optional extra)
        except ImportError:
            if method == "umap":
                raise UserError("--projection umap needs umap-learn: pip install 'sentencemim[umap]'") from None
            umap = None
        if umap is not None and len(shown) < UMAP_MIN_POINTS:
            if method == "umap":
                raise UserError(f"--projection umap needs at least {UMAP_MIN_POINTS} indexed sentences, "
                                f"got {len(shown)}")
            umap = None
    sub = f"{len(shown)} of {n} indexed sentences" + (f" (a random subset, seed {seed})" if len(shown) < n else "")
    if umap is not None:
        reducer = umap.UMAP(n_components=2, random_state=seed)
        xy = np.asarray(reducer.fit_transform(x), dtype=np.float64)
        return LatentMap(sentences, codes, shown, xy, "umap", f"UMAP of the posterior means, {sub}",
                         reducer=reducer)
    center, comps, xy, explained = pca_2d(x)
    what = (f"PCA of the posterior means, {sub}; axes hold {100 * explained[0]:.1f}% and "
            f"{100 * explained[1]:.1f}% of their variance")
    return LatentMap(sentences, codes, shown, xy, "pca", what, center, comps, explained)
