"""The hub's keys for secrets at rest: made once and private, shared by the hub
processes of one home, rotated without a moment where a value cannot be read."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tether.hub.core.secret_keys import SecretKeyError, SecretKeys


def test_the_key_file_is_made_once_owner_only_and_reused(tmp_path: Path) -> None:
    keys = SecretKeys.load(tmp_path, env_value="")
    path = tmp_path / "secret_key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    token = keys.encrypt("hush")
    assert "hush" not in token
    again = SecretKeys.load(tmp_path, env_value="")
    assert again.decrypt(token) == "hush"
    assert path.read_text().count(",") == 0


def test_a_process_that_missed_a_rotation_reads_the_key_file_again(tmp_path: Path) -> None:
    rotating = SecretKeys.load(tmp_path, env_value="")
    other = SecretKeys.load(tmp_path, env_value="")  # another hub process on this home
    old_token = rotating.encrypt("before")
    rotating.begin_rotation()
    assert (tmp_path / "secret_key").read_text().count(",") == 1  # new,old
    new_token = rotating.reencrypt(old_token)
    assert other.decrypt(old_token) == "before"
    assert other.decrypt(new_token) == "before"  # re-read "new,old"
    rotating.finish_rotation()
    assert rotating.count == 1
    with pytest.raises(SecretKeyError, match="cannot be decrypted with the hub's keys"):
        rotating.decrypt(old_token)
    assert SecretKeys.load(tmp_path, env_value="").decrypt(new_token) == "before"


def test_keys_from_the_environment_decrypt_with_any_and_encrypt_with_the_first(
    tmp_path: Path,
) -> None:
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = SecretKeys.load(tmp_path, env_value=old).encrypt("v")
    both = SecretKeys.load(tmp_path, env_value=f"{new}, {old}")
    assert Fernet(new.encode()).decrypt(both.reencrypt(token).encode()) == b"v"
    both.begin_rotation()
    both.finish_rotation()
    assert both.count == 2  # the environment's list is the operator's to shorten
    assert not (tmp_path / "secret_key").exists()


@pytest.mark.parametrize(
    ("text", "reason"), [("nope", "key 1 of"), (",", "holds no key"), ("a,b", "not a Fernet key")]
)
def test_a_bad_key_is_a_clear_error_that_does_not_quote_it(
    tmp_path: Path, text: str, reason: str
) -> None:
    with pytest.raises(SecretKeyError, match=reason) as caught:
        SecretKeys.load(tmp_path, env_value=text)
    assert "nope" not in str(caught.value)
    (tmp_path / "secret_key").write_text(text)
    with pytest.raises(SecretKeyError, match=reason):
        SecretKeys.load(tmp_path, env_value="")
