"""Client secrets and their Argon2id hashes."""

from __future__ import annotations

import re

from argon2 import PasswordHasher

from bulwark.auth.secrets import hash_password, needs_rehash, new_client_secret, verify_password


def test_client_secrets_are_entra_length_url_safe_and_distinct() -> None:
    secrets = {new_client_secret() for _ in range(50)}
    assert len(secrets) == 50
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{40}", secret) for secret in secrets)


def test_hash_verifies_the_secret_and_nothing_else() -> None:
    secret = new_client_secret()
    stored = hash_password(secret)
    assert stored.startswith("$argon2id$")
    assert secret not in stored
    assert verify_password(secret, stored)
    assert not verify_password(secret[:-1], stored)
    assert not verify_password("", stored)


def test_the_same_secret_hashes_differently_each_time() -> None:
    assert hash_password("correct horse") != hash_password("correct horse")


def test_a_malformed_hash_never_matches() -> None:
    assert not verify_password("anything", "plaintext-from-an-old-table")
    assert needs_rehash("plaintext-from-an-old-table")


def test_a_hash_with_weaker_parameters_needs_rehashing() -> None:
    weak = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1).hash("pw")
    assert verify_password("pw", weak)
    assert needs_rehash(weak)
    assert not needs_rehash(hash_password("pw"))
