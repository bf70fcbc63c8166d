"""How to choose which images to label: typical and diverse ones first, uncertain ones once a head exists.

Each strategy takes L2-normalised vectors of the pool (what may be chosen) and returns a Picks: positions in
the pool, best first, each with a score and the reason it was chosen.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MIN_CLUSTER = 5  # TypiClust skips clusters smaller than this while larger ones are uncovered (outliers)
CLUSTER_DIMS = 128  # typical clusters the vectors' leading principal components, this many
PCA_SAMPLE = 20000  # rows the principal components are fitted on
GRAPH_NEIGHBOURS = 15  # typical's clusters are drawn on the graph joining each image to this many nearest
DIFFUSION_DIMS, DIFFUSION_STEPS = 64, 8  # the graph's leading diffusion directions kept, and the walk's length
GRAPH_SAMPLE = 20000  # the graph is decomposed over at most this many rows; the rest sit among their neighbours
DENSE_GRAPH = 2000  # up to this many rows, one dense eigendecomposition; beyond, Lanczos (scipy's eigsh)
COVER_NEIGHBOURS = 64  # the neighbour graph whose balls coverage counts
UNCERTAIN_POOL = 10  # uncertain: the budget's this-many-times least certain images are clustered for diversity


@dataclass
class Picks:
    """Positions in the pool (best first), with a score each (higher: more worth labelling) and why."""

    rows: np.ndarray
    scores: np.ndarray
    reasons: list[str] = field(default_factory=list)
    suggested: list[str | None] | None = None  # a label per pick, where a head gave one


def kmeans(X: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """K-means of X's rows (spherical: X is normalised): (assignment of each row, centroids).

    Started from scikit-learn's greedy k-means++ seeds (Arthur & Vassilvitskii 2007) and refined by FAISS, the best
    of RESTARTS starts when k is small: FAISS's own start, k rows drawn at random, seldom draws a member of a small
    far cluster, and Lloyd's steps then fold it into a big one. A rare kind of ten images among 1,500 in five
    broad clusters had a cluster of its own in 3 of 10 seeds from FAISS's start, 6 from one k-means++ start and
    10 from the best of five.
    """
    import faiss
    from sklearn.cluster import kmeans_plusplus

    X = np.ascontiguousarray(X, dtype=np.float32)
    k = max(1, min(k, len(X)))
    rng = np.random.default_rng(seed)
    sample = X if len(X) <= SEEDING_SAMPLE else X[np.sort(rng.choice(len(X), SEEDING_SAMPLE, replace=False))]
    best = None
    for start in range(RESTARTS if k <= RESTARTS_UP_TO else 1):
        start_seed = int(np.random.default_rng([seed, start]).integers(2**31))  # any seed ≥ 0 to what both take
        seeds, _ = kmeans_plusplus(sample, k, random_state=start_seed)
        km = faiss.Kmeans(X.shape[1], k, niter=20, seed=start_seed, spherical=True, min_points_per_centroid=1,
                          max_points_per_centroid=max(256, -(-len(X) // k)))  # every row trains
        km.train(X, init_centroids=np.ascontiguousarray(seeds, dtype=np.float32))
        if best is None or km.obj[-1] > best.obj[-1]:  # spherical: the summed similarity to the centroids
            best = km
    _, assign = best.index.search(X, 1)
    return assign[:, 0], best.centroids


SEEDING_SAMPLE = 20000  # k-means++ draws its seeds from at most this many rows (each seed is a pass over them)
RESTARTS, RESTARTS_UP_TO = 5, 64  # k-means starts kept the best of, for k up to this


def typical(X: np.ndarray, budget: int, labelled: np.ndarray | None = None, seed: int = 0) -> Picks:
    """TypiClust's loop (Hacohen, Dekel & Weinshall 2022): cluster the pool and the labelled images into budget +
    labelled clusters; take, from the cluster holding the fewest labelled (and chosen) images, largest first, its
    most typical member; repeat. Typical images of different clusters: the common cases, each kind once.

    The most typical member is the one nearest its cluster's centre, not TypiClust's densest (1 / mean distance to
    its 20 nearest cluster members): over every dimension, on Fashion-MNIST the centre's picks scored 65.0 / 64.2 /
    74.1 / 77.9 / 78.6% at 10 / 20 / 50 / 100 / 200 labels against the densest's 56.5 / 63.8 / 72.2 / 75.8 / 79.2%,
    and on digits the same to within 1.2 points either way (5 seeds, the same clusters; docs/results/select.md).

    The centres are those of the vectors' CLUSTER_DIMS leading principal components (``principal_directions``), not
    of every dimension: at 20 labels on Fashion-MNIST the picks scored 67.6% against 64.2% (random: 56.5%), and
    k-means over 128 dimensions is faster than over 1,280 (docs/results/select.md). The clusters are drawn on those
    components' neighbour graph (``diffusion_map``) where they would hold 2 × GRAPH_NEIGHBOURS images or more: ten
    picks among digits' 1,414 held every digit in 5 of 5 seeds (k-means over the components: 0 of 5) and scored
    86.7% against 76.3%; on Fashion-MNIST 68.5 / 75.8% against 67.6 / 74.6% at 20 / 50 labels, and within 0.6
    points at 10, 100, 200 and 500; on its default-recipe store +4.7 points at 10 labels and 0.3 to 1.6 lower at
    20 to 100 (docs/results/select.md).

    ``labelled``: normalised vectors of images already labelled (they take no pick, but cover their cluster).
    """
    n_labelled = 0 if labelled is None else len(labelled)
    everything = principal_directions(X if not n_labelled else np.concatenate([X, labelled]), seed)
    clusters = budget + n_labelled
    # on the graph only where a cluster can hold several neighbourhoods: smaller ones, the graph's links straddle
    drawn = diffusion_map(everything, seed) if len(everything) >= 2 * GRAPH_NEIGHBOURS * clusters else everything
    assign, _ = kmeans(drawn, clusters, seed)
    X = everything[: len(X)]
    pool_assign = assign[: len(X)]
    k = int(assign.max()) + 1
    covered = np.bincount(assign[len(X):], minlength=k) if n_labelled else np.zeros(k, np.int64)
    sizes = np.bincount(pool_assign, minlength=k)
    taken = np.zeros(len(X), bool)
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    rows, scores, reasons = [], [], []
    while len(rows) < min(budget, len(X)):
        left = sizes - np.bincount(pool_assign[taken], minlength=k)
        open_ = left > 0
        big = open_ & (sizes >= MIN_CLUSTER)
        candidates = np.flatnonzero(big if big.any() else open_)
        # fewest covered first, then the largest cluster
        c = int(candidates[np.lexsort((-sizes[candidates], covered[candidates]))[0]])
        if c not in cache:
            members = np.flatnonzero(pool_assign == c)
            centre = everything[assign == c].mean(axis=0)  # the labelled members' too: the cluster's middle
            cache[c] = (members, X[members] @ (centre / max(float(np.linalg.norm(centre)), 1e-12)))
        members, near = cache[c]
        free = ~taken[members]
        best = np.flatnonzero(free)[np.argmax(near[free])]
        r = int(members[best])
        taken[r] = True
        covered[c] += 1
        rows.append(r)
        scores.append(float(near[best]))
        before = int(covered[c]) - 1
        reasons.append(f"the nearest the centre of its cluster of {int(sizes[c]):,} images (cosine {near[best]:.3f}), "
                       + (f"{before} of them labelled or chosen before" if before else "none of them labelled yet"))
    return Picks(np.asarray(rows, np.int64), _scaled(scores), reasons)


def principal_directions(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """X centred, projected on its CLUSTER_DIMS leading principal components (fitted on at most PCA_SAMPLE rows, a
    randomised SVD) and normalised again; X itself when it has no more columns than that."""
    from sklearn.utils.extmath import randomized_svd

    if X.shape[1] <= CLUSTER_DIMS or len(X) < 2:
        return X
    rng = np.random.default_rng(seed)
    mean = X.mean(axis=0, dtype=np.float64).astype(np.float32)
    sample = X if len(X) <= PCA_SAMPLE else X[np.sort(rng.choice(len(X), PCA_SAMPLE, replace=False))]
    # any seed ≥ 0 (the CLI's and the service's) to one scikit-learn takes
    _, _, Vt = randomized_svd(sample - mean, min(CLUSTER_DIMS, len(sample)), random_state=seed % 2**32)
    P = np.empty((len(X), len(Vt)), np.float32)
    for a in range(0, len(X), 50000):  # a bounded block of centred rows at a time
        P[a:a + 50000] = (X[a:a + 50000] - mean) @ Vt.T.astype(np.float32)
    P /= np.maximum(np.linalg.norm(P, axis=1, keepdims=True), 1e-12)
    return P


def diffusion_map(X: np.ndarray, seed: int = 0) -> np.ndarray:
    """X's rows placed by the neighbour graph (Coifman & Lafon 2006): each row joined to its GRAPH_NEIGHBOURS nearest
    (by cosine, either way round), the graph's DIFFUSION_DIMS leading eigenvectors (of the normalised adjacency)
    weighted by their eigenvalues to the power DIFFUSION_STEPS, centred, and the rows normalised again.

    Rows that a chain of close neighbours joins land together even where the chain curves away from a straight
    line, which k-means over the vectors themselves cuts across; the weighting keeps the graph's broad divisions
    and damps the fine ones. Beyond GRAPH_SAMPLE rows the graph is that many drawn at random, and each other row
    takes the mean place of its GRAPH_NEIGHBOURS nearest among them. X itself when it has too few rows for a graph.
    """
    n = len(X)
    if n <= GRAPH_NEIGHBOURS + 2:
        return X
    X = np.ascontiguousarray(X, dtype=np.float32)
    rng = np.random.default_rng(seed)
    drawn = np.arange(n) if n <= GRAPH_SAMPLE else np.sort(rng.choice(n, GRAPH_SAMPLE, replace=False))
    places = _graph_places(X[drawn], seed)
    if len(drawn) == n:
        out = places
    else:
        import faiss

        out = np.empty((n, places.shape[1]), np.float32)
        out[drawn] = places
        rest = np.setdiff1d(np.arange(n), drawn)
        index = faiss.IndexFlatIP(X.shape[1])
        index.add(X[drawn])
        for a in range(0, len(rest), 50000):  # a bounded block of the rest at a time
            _, near = index.search(X[rest[a:a + 50000]], GRAPH_NEIGHBOURS)
            out[rest[a:a + 50000]] = places[near].mean(axis=1)
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def _graph_places(X: np.ndarray, seed: int) -> np.ndarray:
    """``diffusion_map``'s coordinates of every row of X, from X's own neighbour graph (not normalised)."""
    import scipy.sparse as sparse

    n = len(X)
    _, near = neighbour_graph(X, GRAPH_NEIGHBOURS)
    k = near.shape[1]
    joined = sparse.csr_matrix((np.ones(n * k, np.float32), (np.repeat(np.arange(n), k), near.ravel())), shape=(n, n))
    joined = joined.maximum(joined.T)  # neighbours either way round: the graph is symmetric
    degree = np.asarray(joined.sum(axis=1)).ravel()
    scale = sparse.diags(1 / np.sqrt(degree))
    adjacency = scale @ joined @ scale
    dims = min(DIFFUSION_DIMS, n - 2)
    if n <= DENSE_GRAPH:
        values, vectors = np.linalg.eigh(adjacency.toarray())
        values, vectors = values[-dims:], vectors[:, -dims:]
    else:
        from scipy.sparse.linalg import eigsh

        start = np.random.default_rng(seed).standard_normal(n)  # Lanczos' start, seeded: the same picks each run
        values, vectors = eigsh(adjacency, k=dims, which="LA", v0=start)
    places = vectors / np.sqrt(degree)[:, None] * np.clip(values, 0, None) ** DIFFUSION_STEPS
    # centred: the walk's steady state (eigenvalue 1, the same place for every row of a connected graph) then tells
    # no rows apart, and where the graph falls into parts, each part's own steady state still does
    return (places - places.mean(axis=0)).astype(np.float32)


def neighbour_graph(X: np.ndarray, k: int = COVER_NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows by cosine (exact): (similarities, positions). What coverage counts balls in;
    it depends on the pool alone, so a caller choosing many times from one pool makes it once."""
    import faiss

    X = np.ascontiguousarray(X, dtype=np.float32)
    k = min(k, len(X) - 1)
    index = faiss.IndexFlatIP(X.shape[1])
    index.add(X)
    D, I = index.search(X, k + 1)
    return D[:, 1:], I[:, 1:]  # not one's own neighbour (an exact copy may swap with it: either serves)


def coverage(X: np.ndarray, budget: int, labelled: np.ndarray | None = None, seed: int = 0,
             graph: tuple[np.ndarray, np.ndarray] | None = None) -> Picks:
    """ProbCover (Yehuda et al. 2022): every image covers the images within a similarity radius of it; choose,
    greedily, the image that covers the most images no pick (nor labelled image) covers yet.

    The radius is the similarity at which a typical image's ball holds the pool's size / budget images (capped
    by the COVER_NEIGHBOURS nearest), so that the budget's balls together can cover the pool.
    """
    n = len(X)
    if n < 2:
        return Picks(np.arange(n), np.ones(n), ["the only image"] * n)
    D, I = graph if graph is not None else neighbour_graph(X)
    K = D.shape[1]
    m = int(np.clip(n // max(budget, 1), 1, K))
    radius = float(np.median(D[:, m - 1]))
    inside = D >= radius
    uncovered = np.ones(n, bool)
    if labelled is not None and len(labelled):  # what the labelled images cover is covered already
        for a in range(0, len(labelled), 1024):  # a bounded block of the labelled × pool similarities at a time
            uncovered[(labelled[a:a + 1024] @ X.T >= radius).any(axis=0)] = False
    # ball of i: i and its neighbours inside the radius; reverse lists say which balls a point is in
    ball_rows = np.repeat(np.arange(n), inside.sum(axis=1))
    ball_members = I[inside]
    gain = uncovered.astype(np.int64) + np.bincount(ball_rows, weights=uncovered[ball_members], minlength=n).astype(np.int64)
    order = np.argsort(ball_members, kind="stable")
    holders, starts = ball_rows[order], np.searchsorted(ball_members[order], np.arange(n + 1))
    ball_start = np.searchsorted(ball_rows, np.arange(n + 1))
    rows, scores, reasons = [], [], []
    chosen = np.zeros(n, bool)
    for _ in range(min(budget, n)):
        gain[chosen] = -1
        r = int(np.argmax(gain))
        rows.append(r)
        scores.append(float(max(gain[r], 0)))
        reasons.append(f"covers {max(int(gain[r]), 0)} images no earlier pick covers (cosine ≥ {radius:.3f})")
        chosen[r] = True
        newly = np.concatenate([[r], ball_members[ball_start[r]:ball_start[r + 1]]])
        newly = newly[uncovered[newly]]
        uncovered[newly] = False
        for p in newly:  # every ball holding a newly covered image gains one less
            gain[p] -= 1
            np.subtract.at(gain, holders[starts[p]:starts[p + 1]], 1)
    return Picks(np.asarray(rows, np.int64), _scaled(scores), reasons)


def uncertain(X: np.ndarray, proba: np.ndarray, classes, budget: int, seed: int = 0) -> Picks:
    """Margin uncertainty made diverse (Cluster-Margin, Citovsky et al. 2021): the UNCERTAIN_POOL × budget images
    whose two likeliest classes are closest, clustered into ``budget`` groups; from each group its least certain
    image. The batch spreads over the head's confusions instead of piling into one."""
    classes = [str(c) for c in classes]
    if proba.shape[1] == 1:
        top2 = np.concatenate([proba, np.zeros_like(proba)], axis=1)
        order = np.zeros((len(proba), 2), np.int64)
    else:
        order = np.argsort(-proba, axis=1)[:, :2]
        top2 = np.take_along_axis(proba, order, axis=1)
    margin = top2[:, 0] - top2[:, 1]
    pool = np.argsort(margin, kind="stable")[: min(len(X), UNCERTAIN_POOL * budget)]
    take = min(budget, len(pool))
    assign, _ = kmeans(X[pool], take, seed)
    rows = []
    for c in np.unique(assign):
        members = pool[assign == c]
        rows.append(int(members[np.argmin(margin[members])]))
    rows = sorted(rows, key=lambda r: margin[r])
    if len(rows) < take:  # k-means left clusters empty: fill with the next least certain
        rest = [int(r) for r in pool if r not in set(rows)]
        rows += rest[: take - len(rows)]
    rows = np.asarray(rows, np.int64)
    reasons = [f"uncertain between {classes[order[r, 0]]!r} and {classes[order[r, 1]]!r} "
               f"(margin {margin[r]:.3f})" if proba.shape[1] > 1 else "uncertain" for r in rows]
    return Picks(rows, 1.0 - margin[rows], reasons, suggested=[str(classes[order[r, 0]]) for r in rows])


def random_picks(n: int, budget: int, seed: int = 0) -> Picks:
    """The baseline: ``budget`` images drawn at random."""
    rows = np.random.default_rng(seed).permutation(n)[: min(budget, n)]
    return Picks(rows, np.zeros(len(rows)), ["drawn at random"] * len(rows))


def _scaled(scores) -> np.ndarray:
    """Scores over 0..1 (the best 1), rounded for the CSV."""
    s = np.asarray(scores, np.float64)
    top = s.max() if len(s) and s.max() > 0 else 1.0
    return np.round(s / top, 6)
