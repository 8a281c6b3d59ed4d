"""RFC 9162 Merkle tree: published CT test vectors, and property tests that attack the
verifiers (every proof for every small tree verifies; every mutation is rejected)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mamori.audit import merkle as m

# The Certificate Transparency reference data (RFC 6962 test vectors, as published with the
# CT and transparency-dev implementations): leaves, and the root for each size 0..8.
CT_DATA = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
]
CT_ROOTS = [
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
CT_INCLUSION = {
    (0, 8): [
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (5, 8): [
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
}
CT_CONSISTENCY = {
    (2, 8): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    (6, 8): [
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    ],
    (2, 5): [
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
    ],
}
LEAVES = [m.leaf_hash(bytes.fromhex(d)) for d in CT_DATA]


def test_roots_match_the_published_vectors() -> None:
    for n in range(len(LEAVES) + 1):
        assert m.root(LEAVES[:n]).hex() == CT_ROOTS[n], n


def test_proofs_match_the_published_vectors() -> None:
    for (index, size), expected in CT_INCLUSION.items():
        proof = m.inclusion_proof(index, LEAVES[:size])
        assert [p.hex() for p in proof] == expected
        assert m.verify_inclusion(index, size, LEAVES[index], proof, bytes.fromhex(CT_ROOTS[size]))
    for (first, second), expected in CT_CONSISTENCY.items():
        proof = m.consistency_proof(first, LEAVES[:second])
        assert [p.hex() for p in proof] == expected
        assert m.verify_consistency(
            first, second, bytes.fromhex(CT_ROOTS[first]), bytes.fromhex(CT_ROOTS[second]), proof
        )


def test_tree_size_is_bound_by_the_signed_checkpoint_not_by_the_proof() -> None:
    # A proof has the same shape for some neighbouring sizes (1→3 and 1→4 here): hashes alone
    # cannot tell which size was meant, and RFC 9162 verifiers accept both. This is why the
    # size is part of the *signed* checkpoint, and the verifier takes it from there.
    leaves = _leaves(3)
    proof = m.consistency_proof(1, leaves)
    assert m.verify_consistency(1, 3, leaves[0], m.root(leaves), proof)
    assert m.verify_consistency(1, 4, leaves[0], m.root(leaves), proof)


def test_split_is_rfc_not_midpoint() -> None:
    assert [m.split_point(n) for n in (2, 3, 4, 5, 6, 7, 8, 9, 1000)] == [
        1,
        2,
        2,
        4,
        4,
        4,
        4,
        8,
        512,
    ]


def _leaves(n: int) -> list[bytes]:
    return [m.leaf_hash(i.to_bytes(4, "big")) for i in range(n)]


def _flip(b: bytes, bit: int) -> bytes:
    i = bit % (len(b) * 8)
    return b[: i // 8] + bytes([b[i // 8] ^ (1 << (i % 8))]) + b[i // 8 + 1 :]


def test_every_inclusion_proof_up_to_64_verifies_and_mutations_fail() -> None:
    for n in range(1, 65):
        leaves = _leaves(n)
        r = m.root(leaves)
        for i in range(n):
            proof = m.inclusion_proof(i, leaves)
            assert m.verify_inclusion(i, n, leaves[i], proof, r)
            assert not m.verify_inclusion(i, n, _flip(leaves[i], i), proof, r)
            assert not m.verify_inclusion(i, n, leaves[i], proof, _flip(r, i))
            if n > 1:
                assert not m.verify_inclusion((i + 1) % n, n, leaves[i], proof, r)
                assert not m.verify_inclusion(i, n, leaves[i], proof[:-1], r)
                assert not m.verify_inclusion(i, n, leaves[i], [*proof, proof[0]], r)
            assert not m.verify_inclusion(n, n, leaves[i], proof, r)


def test_every_consistency_proof_up_to_40_verifies_and_mutations_fail() -> None:
    for n in range(1, 41):
        leaves = _leaves(n)
        rn = m.root(leaves)
        for k in range(1, n + 1):
            rk = m.root(leaves[:k])
            proof = m.consistency_proof(k, leaves)
            assert m.verify_consistency(k, n, rk, rn, proof), (k, n)
            if k == n:
                assert proof == []
                assert not m.verify_consistency(k, n, rk, _flip(rn, 3), proof)
                continue
            assert not m.verify_consistency(k, n, _flip(rk, k), rn, proof)
            assert not m.verify_consistency(k, n, rk, _flip(rn, n), proof)
            assert not m.verify_consistency(k, n, rk, rn, proof[:-1])
            assert not m.verify_consistency(k, n, rk, rn, [])
            for j in range(len(proof)):
                bad = [*proof[:j], _flip(proof[j], j), *proof[j + 1 :]]
                assert not m.verify_consistency(k, n, rk, rn, bad)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 300), st.data())
def test_random_trees_proofs_roundtrip(n: int, data: st.DataObject) -> None:
    leaves = _leaves(n)
    r = m.root(leaves)
    i = data.draw(st.integers(0, n - 1))
    bit = data.draw(st.integers(0, 255))
    proof = m.inclusion_proof(i, leaves)
    assert m.verify_inclusion(i, n, leaves[i], proof, r)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1))
        tampered = [*proof[:j], _flip(proof[j], bit), *proof[j + 1 :]]
        assert not m.verify_inclusion(i, n, leaves[i], tampered, r)
    k = data.draw(st.integers(1, n))
    cproof = m.consistency_proof(k, leaves)
    assert m.verify_consistency(k, n, m.root(leaves[:k]), r, cproof)
    if k < n:
        # a fork: the same first k leaves but a different later history
        forked = [*leaves[:k], *_leaves(n + 7)[k + 7 :]]
        assert len(forked) == n
        assert not m.verify_consistency(k, n, m.root(leaves[:k]), r, m.consistency_proof(k, forked))


@given(st.lists(st.binary(max_size=40), max_size=80))
def test_frontier_matches_full_root(data: list[bytes]) -> None:
    f = m.Frontier()
    leaves = []
    for d in data:
        leaves.append(m.leaf_hash(d))
        f.append(leaves[-1])
        assert f.root() == m.root(leaves)
    restored = m.Frontier(f.size, f.nodes)
    assert restored.root() == m.root(leaves)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 400), st.data())
def test_memoised_tree_gives_the_same_proofs_as_the_rfc_recursion(
    n: int, data: st.DataObject
) -> None:
    leaves = _leaves(n)
    tree = m.Tree(leaves)
    assert tree.root() == m.root(leaves)
    i = data.draw(st.integers(0, n - 1))
    assert tree.inclusion_proof(i) == m.inclusion_proof(i, leaves)
    k = data.draw(st.integers(1, n))
    assert tree.consistency_proof(k, n) == m.consistency_proof(k, leaves)
    size = data.draw(st.integers(i + 1, n))
    assert m.verify_inclusion(i, size, leaves[i], tree.inclusion_proof(i, size), tree.root(size))
