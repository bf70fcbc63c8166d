"""Near-duplicate groups in a stored dataset, from its index's neighbours."""

from __future__ import annotations

from ..errors import ParameterError
from ..store import FeatureStore
from ..store.view import VectorView
from .dataset_index import open_index
from .index import BLOCK_ROWS
from .keys import unpack_keys


def find_duplicates(store: FeatureStore, dataset: str, threshold: float = 0.95, k: int = 10,
                    use_layers: str | None = None) -> list[dict]:
    """Groups of near-duplicates: samples whose cosine similarity is at least ``threshold``.

    Neighbours come from the dataset's index (exact search when it has none); groups are the
    connected components of the "similar enough" pairs, so A~B and B~C put A, B, C together.
    Files with identical content share a key and are always in one group.
    """
    if not 0.0 < threshold <= 1.0:
        raise ParameterError("threshold", f"must be in (0, 1], not {threshold}.")
    vi, _ = open_index(store, dataset, use_layers)
    keys = unpack_keys(vi.keys).tolist()
    view = VectorView(store, dataset, use_layers)
    parent = list(range(len(keys)))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    best: dict[tuple[int, int], float] = {}
    # the index may still hold rows the dataset lost (LiveIndex leaves them out of answers): not queried either
    present = set(view.keys().tolist())
    queries = [a for a, key in enumerate(keys) if key in present]
    for start in range(0, len(queries), BLOCK_ROWS):  # a block of queries at a time: never every vector at once
        block = queries[start:start + BLOCK_ROWS]
        vectors = view.vectors([keys[a] for a in block])
        D, I = vi.search(vectors, min(k + 1, vi.n))  # it normalises as it was built
        for a, scores, ids in zip(block, D.tolist(), I.tolist()):
            for s, b in zip(scores, ids):
                if b >= 0 and b != a and s >= threshold:
                    parent[find(a)] = find(b)
                    pair = (min(a, b), max(a, b))
                    best[pair] = max(best.get(pair, 0.0), float(s))
    paths_of: dict[str, list[tuple[str, str | None]]] = {}
    for m in store.members(dataset):
        paths_of.setdefault(m.key, []).append((m.path, m.label))
    groups: dict[int, list[int]] = {}
    for a in range(len(keys)):
        groups.setdefault(find(a), []).append(a)
    weakest: dict[int, float] = {}
    for (a, _), s in best.items():
        root = find(a)
        weakest[root] = min(weakest.get(root, 1.0), s)
    out = []
    for root, members in groups.items():
        items = [{"key": keys[a], "path": p, "label": lbl} for a in members for p, lbl in paths_of.get(keys[a], [])]
        if len(items) >= 2:
            weakest_link = round(weakest.get(root, 1.0), 6)  # min_score: its old name, for one release
            out.append({"size": len(items), "min_similarity": weakest_link, "min_score": weakest_link,
                        "items": items})
    return sorted(out, key=lambda g: (-g["size"], g["items"][0]["path"]))
