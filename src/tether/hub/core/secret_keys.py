"""The hub's keys for secrets at rest: connections' passwords and extras, variables.

Values are encrypted with Fernet (AES-128-CBC with HMAC-SHA256, from
``cryptography``) under a list of keys: the first encrypts, every one
decrypts (``MultiFernet``), so a key can be replaced without a moment where
stored values cannot be read.

The keys come from ``TETHER_SECRET_KEY`` (comma-separated Fernet keys) or,
without it, from the file ``secret_key`` in the hub's home, made once (0600,
``O_EXCL`` so two hubs starting together cannot both make one) and rewritten
only by a rotation (:meth:`SecretKeys.begin_rotation`), atomically. The key
never goes to the store, the log or a child process (``config.child_environment``
drops every ``TETHER_*`` variable).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

#: The file in the hub's home that holds the keys when TETHER_SECRET_KEY is not set.
KEY_FILE = "secret_key"
#: Where a new key file is written before it replaces the old one.
KEY_FILE_TMP = "secret_key.tmp"
ENV_VAR = "TETHER_SECRET_KEY"


class SecretKeyError(Exception):
    """The keys cannot be loaded, or a stored value cannot be decrypted with them.

    The message says what to check; it never holds a key or a value.
    """


def _parse(text: str, source: str) -> list[Fernet]:
    keys = _texts(text)
    if not keys:
        raise SecretKeyError(f"{source} holds no key")
    fernets = []
    for position, key in enumerate(keys, 1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            raise SecretKeyError(
                f"key {position} of {source} is not a Fernet key (32 url-safe base64-encoded "
                "bytes; make one with: python -c 'from cryptography.fernet import Fernet; "
                "print(Fernet.generate_key().decode())')"
            ) from None
    return fernets


def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
    """Write ``text`` to a new 0600 file at ``path`` (failing if it exists when ``exclusive``)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


class SecretKeys:
    """Encrypts and decrypts text with the hub's keys; safe to share between threads."""

    def __init__(self, keys: list[Fernet], path: Path | None, texts: list[str]) -> None:
        self._multi = MultiFernet(keys)
        #: The key file, or None when the keys come from TETHER_SECRET_KEY.
        self.path = path
        self._texts = texts
        self._lock = threading.Lock()
        #: Held by the one rotation this process runs at a time (see store.rotate_key).
        self.rotating = threading.Lock()

    @property
    def from_environment(self) -> bool:
        return self.path is None

    @property
    def count(self) -> int:
        """How many keys decrypt (the first of them encrypts)."""
        return len(self._texts)

    @classmethod
    def load(cls, home: Path, env_value: str | None = None) -> SecretKeys:
        """The keys of ``TETHER_SECRET_KEY`` (``env_value`` overrides it), else of the
        home's key file, made now if there is none. SecretKeyError if they are unusable."""
        value = os.environ.get(ENV_VAR) if env_value is None else env_value
        if value is not None and value.strip():
            return cls(_parse(value, ENV_VAR), None, _texts(value))
        path = home / KEY_FILE
        home.mkdir(parents=True, exist_ok=True)
        try:
            _write_private(path, Fernet.generate_key().decode(), exclusive=True)
        except FileExistsError:
            pass  # made earlier, or by another hub process a moment ago
        return cls._from_file(path)

    @classmethod
    def _from_file(cls, path: Path) -> SecretKeys:
        try:
            text = path.read_text()
        except OSError as exc:
            raise SecretKeyError(f"cannot read the hub's key file {path}: {exc.strerror}") from None
        return cls(_parse(text, str(path)), path, _texts(text))

    def encrypt(self, text: str) -> str:
        """``text`` encrypted with the first key, as a Fernet token (ASCII)."""
        return self._multi.encrypt(text.encode()).decode()

    def decrypt(self, token: str) -> str:
        """The text of a token made by :meth:`encrypt` with any of the keys."""
        return self._with_fresh_keys(lambda multi: multi.decrypt(token.encode())).decode()

    def reencrypt(self, token: str) -> str:
        """``token``'s text encrypted again with the first key (``MultiFernet.rotate``)."""
        return self._with_fresh_keys(lambda multi: multi.rotate(token.encode())).decode()

    def _with_fresh_keys(self, use: Callable[[MultiFernet], bytes]) -> bytes:
        multi = self._multi
        try:
            return use(multi)
        except InvalidToken:
            pass
        # Another hub process on this home may have rotated the key since we read
        # it: read the file once more before giving up.
        if self.path is not None and self._reload():
            try:
                return use(self._multi)
            except InvalidToken:
                pass
        raise SecretKeyError(
            "a stored secret cannot be decrypted with the hub's keys: was "
            f"{ENV_VAR} or the hub's {KEY_FILE} file changed without a rotation? "
            "(tether secrets rotate-key keeps the old key until every value is re-encrypted)"
        )

    def _reload(self) -> bool:
        """Read the key file again; True if its keys differ from ours."""
        assert self.path is not None
        try:
            fresh = SecretKeys._from_file(self.path)
        except SecretKeyError:
            return False
        with self._lock:
            if fresh._texts == self._texts:
                return False
            self._multi, self._texts = fresh._multi, fresh._texts
        return True

    # Rotation. With a key file: begin writes "new,old..." and uses it, the
    # caller re-encrypts every value, finish writes "new" alone. A crash in
    # between leaves a file that still decrypts everything; the next rotation
    # drops the old keys. With TETHER_SECRET_KEY the operator owns the list:
    # begin changes nothing, and finish cannot drop a key from the environment.

    def begin_rotation(self) -> None:
        """With a key file: put a new key first in it (and here), keeping the old ones."""
        if self.path is None:
            return
        with self._lock:
            texts = [Fernet.generate_key().decode(), *self._texts]
            self._replace_file(texts)
            self._multi = MultiFernet([Fernet(t) for t in texts])
            self._texts = texts

    def finish_rotation(self) -> None:
        """With a key file: keep only the first key, now that nothing needs the others."""
        if self.path is None:
            return
        with self._lock:
            texts = self._texts[:1]
            self._replace_file(texts)
            self._multi = MultiFernet([Fernet(t) for t in texts])
            self._texts = texts

    def _replace_file(self, texts: list[str]) -> None:
        assert self.path is not None
        tmp = self.path.with_name(KEY_FILE_TMP)
        tmp.unlink(missing_ok=True)
        _write_private(tmp, ",".join(texts), exclusive=True)
        os.replace(tmp, self.path)


def _texts(value: str) -> list[str]:
    return [k.strip() for k in value.split(",") if k.strip()]
