"""Signing keys: thumbprint ids, the public JWKS, rotation and retirement."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from bulwark.auth.keys import (
    KeyRing,
    KeyRingCache,
    KeyRingError,
    SigningKey,
    generate_signing_key,
    jwk_thumbprint,
    retire,
    rotate,
)
from bulwark.clock import FrozenClock

NOW = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

# RFC 7638, section 3.1: the example key and its SHA-256 thumbprint.
RFC7638_JWK = {
    "kty": "RSA",
    "n": (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECP"
        "ebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY3"
        "68QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4l"
        "Fd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    ),
    "e": "AQAB",
}
RFC7638_THUMBPRINT = "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


@pytest.fixture(scope="module")
def spare_keys() -> list[SigningKey]:
    """A few inactive keys, generated once because RSA generation is the slow part of these tests."""
    return [generate_signing_key(NOW - timedelta(days=i), active=False) for i in range(3)]


def test_thumbprint_matches_rfc_7638_example() -> None:
    public = RSAAlgorithm.from_jwk(RFC7638_JWK)
    assert isinstance(public, rsa.RSAPublicKey)
    assert jwk_thumbprint(public) == RFC7638_THUMBPRINT


def test_generated_key_is_named_by_the_thumbprint_of_its_published_jwk() -> None:
    key = generate_signing_key(NOW)
    [published] = KeyRing([key]).jwks()["keys"]
    assert key.active and key.created_at == NOW and key.retired_at is None
    assert jwk_thumbprint(RSAAlgorithm.from_jwk(published)) == key.kid
    assert published["kid"] == key.kid


def test_jwks_publishes_only_public_members() -> None:
    key = generate_signing_key(NOW)
    document = KeyRing([key]).jwks()
    [published] = document["keys"]
    assert set(published) == {"kty", "use", "alg", "kid", "n", "e"}
    assert (published["kty"], published["use"], published["alg"]) == ("RSA", "sig", "RS256")
    assert "BEGIN" not in str(document)


def test_published_key_verifies_what_the_private_key_signs() -> None:
    key = generate_signing_key(NOW)
    [published] = KeyRing([key]).jwks()["keys"]
    token = jwt.encode({"x": 1}, key.private_key, algorithm="RS256")
    assert jwt.decode(token, RSAAlgorithm.from_jwk(published), algorithms=["RS256"]) == {"x": 1}


def test_keyring_signs_with_the_active_key_and_verifies_with_every_unretired_one(
    spare_keys: list[SigningKey],
) -> None:
    active = replace(spare_keys[0], active=True)
    retired = replace(spare_keys[2], retired_at=NOW)
    ring = KeyRing([spare_keys[1], active, retired])
    assert ring.signing_key == active
    assert ring.kids == (active.kid, spare_keys[1].kid)
    assert [k["kid"] for k in ring.jwks()["keys"]] == [active.kid, spare_keys[1].kid]
    assert ring.verification_key(spare_keys[1].kid) is not None
    assert ring.verification_key(retired.kid) is None
    assert retired.kid not in ring


def test_keyring_refuses_two_active_keys(spare_keys: list[SigningKey]) -> None:
    with pytest.raises(KeyRingError, match="only one signing key may be active"):
        KeyRing([replace(spare_keys[0], active=True), replace(spare_keys[1], active=True)])


def test_keyring_without_an_active_key_verifies_but_cannot_sign(
    spare_keys: list[SigningKey],
) -> None:
    ring = KeyRing(spare_keys[:2])
    assert ring.verification_key(spare_keys[0].kid) is not None
    with pytest.raises(KeyRingError, match="no active signing key"):
        _ = ring.signing_key


def test_keyring_refuses_a_kid_that_does_not_match_the_key(spare_keys: list[SigningKey]) -> None:
    mislabelled = replace(spare_keys[0], kid=spare_keys[1].kid)
    with pytest.raises(KeyRingError, match="does not match its key material"):
        KeyRing([mislabelled])


def test_a_key_cannot_be_active_and_retired(spare_keys: list[SigningKey]) -> None:
    with pytest.raises(KeyRingError):
        replace(spare_keys[0], active=True, retired_at=NOW)


def test_naive_timestamps_are_refused(spare_keys: list[SigningKey]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        replace(spare_keys[0], created_at=datetime(2025, 1, 1))


def test_rotate_adds_an_active_key_and_keeps_the_old_one_for_verification() -> None:
    first = generate_signing_key(NOW)
    keys = [first]
    rotated = rotate(keys, NOW + timedelta(days=30))

    assert keys == [first] and first.active  # the input is left as it was
    assert len(rotated) == 2
    old, new = rotated
    assert old.kid == first.kid and not old.active and old.retired_at is None
    assert new.active and new.kid != first.kid and new.created_at == NOW + timedelta(days=30)
    ring = KeyRing(rotated)
    assert ring.signing_key.kid == new.kid
    assert set(ring.kids) == {first.kid, new.kid}


def test_rotate_on_no_keys_creates_the_first_one() -> None:
    [only] = rotate([], NOW)
    assert KeyRing([only]).signing_key == only


def test_retire_removes_a_key_from_verification_but_keeps_its_record(
    spare_keys: list[SigningKey],
) -> None:
    keys = [replace(spare_keys[0], active=True), spare_keys[1]]
    retired = retire(keys, spare_keys[1].kid, NOW)

    assert retired[1].retired_at == NOW
    assert keys[1].retired_at is None  # the input is left as it was
    assert spare_keys[1].kid not in KeyRing(retired)
    assert spare_keys[1].kid not in {k["kid"] for k in KeyRing(retired).jwks()["keys"]}


def test_retiring_twice_keeps_the_first_retirement_time(spare_keys: list[SigningKey]) -> None:
    once = retire(spare_keys[:1], spare_keys[0].kid, NOW)
    twice = retire(once, spare_keys[0].kid, NOW + timedelta(hours=5))
    assert twice[0].retired_at == NOW


def test_the_active_key_cannot_be_retired(spare_keys: list[SigningKey]) -> None:
    keys = [replace(spare_keys[0], active=True)]
    with pytest.raises(KeyRingError, match="rotate before retiring"):
        retire(keys, spare_keys[0].kid, NOW)


def test_retiring_an_unknown_kid_fails(spare_keys: list[SigningKey]) -> None:
    with pytest.raises(KeyRingError, match="no signing key with kid"):
        retire(spare_keys, "no-such-kid", NOW)


class CountingStore:
    """Stands in for the key table: hands out fresh records and counts reads."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = keys
        self.reads = 0

    def load(self) -> list[SigningKey]:
        self.reads += 1
        return [replace(key) for key in self.keys]


def test_cache_reads_the_store_once_until_the_ring_is_old(spare_keys: list[SigningKey]) -> None:
    store = CountingStore([replace(spare_keys[0], active=True)])
    clock = FrozenClock(NOW)
    cache = KeyRingCache(store.load, clock, max_age_seconds=60)
    for _ in range(10):
        assert cache().signing_key.kid == spare_keys[0].kid
    assert store.reads == 1
    clock.advance(60)
    cache()
    assert store.reads == 2


def test_cache_reload_sees_a_rotation_at_once(spare_keys: list[SigningKey]) -> None:
    store = CountingStore([replace(spare_keys[0], active=True)])
    cache = KeyRingCache(store.load, FrozenClock(NOW))
    assert cache().signing_key.kid == spare_keys[0].kid
    store.keys = rotate(store.keys, NOW)
    assert cache().signing_key.kid == spare_keys[0].kid  # still the ring it loaded
    assert cache.reload().signing_key.kid == store.keys[-1].kid


def test_cache_looks_again_for_an_unseen_kid_but_not_on_every_request(
    spare_keys: list[SigningKey],
) -> None:
    store = CountingStore([replace(spare_keys[0], active=True)])
    clock = FrozenClock(NOW)
    cache = KeyRingCache(store.load, clock, min_reload_interval_seconds=5)
    cache()
    clock.advance(5)
    # Another process rotates; this one has not reloaded yet.
    store.keys = [spare_keys[0], replace(spare_keys[1], active=True)]
    assert spare_keys[1].kid not in cache()
    assert spare_keys[1].kid in cache.refresh_for(spare_keys[1].kid)
    assert store.reads == 2
    for _ in range(10):
        assert "forged-kid" not in cache.refresh_for("forged-kid")
    assert store.reads == 2
    clock.advance(5)
    cache.refresh_for("forged-kid")
    assert store.reads == 3
