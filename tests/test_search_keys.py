"""An index's key table: the store's hex keys held as 32-byte digests, read back as the same text."""

from __future__ import annotations

import hashlib

import numpy as np

from featx.search.index import build_index, load_index, save_index
from featx.search.keys import DIGEST, join_keys, pack_keys, unpack_keys


def hex_keys(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def test_hex_keys_pack_to_digests_and_come_back_the_same():
    keys = hex_keys(100) + ["00" * 32, "ab" + "00" * 31]  # trailing zero bytes, which NumPy's bytes strip
    packed = pack_keys(keys)
    assert packed.dtype == DIGEST and packed.nbytes == 32 * len(keys)
    assert unpack_keys(packed).tolist() == keys
    assert str(unpack_keys(packed[100])) == "00" * 32 and unpack_keys(packed[[101, 0]]).tolist() == [keys[101], keys[0]]
    assert pack_keys(packed) is packed


def test_keys_of_other_shapes_stay_text():
    for keys in (["a", "b"], [k.upper() for k in hex_keys(3)], [" " + k[1:] for k in hex_keys(3)],
                 ["g" * 64], hex_keys(2) + ["short"]):
        packed = pack_keys(keys)
        assert packed.dtype.kind == "U" and packed.tolist() == keys
    assert join_keys(pack_keys(hex_keys(2)), pack_keys(["x"])).tolist() == hex_keys(2) + ["x"]
    assert join_keys(pack_keys(hex_keys(2)), pack_keys(hex_keys(3)[2:])).dtype == DIGEST


def test_a_saved_index_holds_its_keys_as_digests_and_answers_with_their_text(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 16)).astype(np.float32)
    keys = hex_keys(300)
    vi = build_index(X, keys, "flat")
    save_index(vi, tmp_path / "i.npz")
    back = load_index(tmp_path / "i.npz")
    assert back.keys.dtype == DIGEST and back.nbytes() == vi.nbytes()
    _, I = back.search(X[:5], 3)
    assert unpack_keys(back.keys[I[:, 0]]).tolist() == keys[:5]
