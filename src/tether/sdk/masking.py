"""Secret values a task must never show in its log, and the code that blanks them.

A task process registers every secret it holds with ``mask_secret`` (Tether
does so for each connection password, connection URI and secret variable it
hands to the task; a task may add its own, as with Airflow's
``mask_secret``). The task process's output is then written to its log
through ``StreamRedactor`` (see ``tether.worker.masked_output``), which
replaces each registered value by ``***`` before the worker keeps or ships a
byte of it.

With a value, its common encodings are masked too: URL-quoted
(``quote(value, safe="")`` and ``quote_plus``) and base64 of its UTF-8
(standard and URL-safe alphabets, with and without ``=`` padding), because
a password often reaches a log inside a URL or an HTTP header. Other
transformations (JSON or ``repr`` escapes, base64 of a longer string that
contains the value, upper/lower case) are not recognised.

Values shorter than ``MIN_SECRET_LENGTH`` characters are not masked: a
two-letter password would blank out every occurrence of those two letters
in ordinary text, and such a password is not a secret anyway.

The registry is process-wide and thread-safe: the task's code registers
values on its own threads while the log thread reads them. A registration
replaces one immutable snapshot (the compiled patterns), so a reader never
takes a lock and never sees half a registration.
"""

from __future__ import annotations

import base64
import re
import threading
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

#: Shorter values are not masked (they would blank out ordinary text).
MIN_SECRET_LENGTH = 4

#: What a masked value is replaced by.
REPLACEMENT = "***"


def _utf8(text: str) -> bytes:
    """``text`` as a task's output would carry it; a str that came from
    undecodable bytes (``os.fsdecode``) turns back into those bytes."""
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def encodings(value: str) -> set[str]:
    """``value`` and the forms it commonly takes in a log line."""
    raw = _utf8(value)
    forms = {value, quote(raw, safe=""), quote_plus(raw)}
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = encoded.decode("ascii")
        forms.update((text, text.rstrip("=")))
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


@dataclass(frozen=True)
class _Patterns:
    """One consistent view of the registry: what ``redact`` and the stream use."""

    text: re.Pattern[str] | None
    data: re.Pattern[bytes] | None
    #: Length in bytes of the longest masked form (how much of a stream may
    #: still be the start of one).
    longest: int


def _compile(forms: set[str]) -> _Patterns:
    if not forms:
        return _Patterns(None, None, 0)
    # Longest first: a regex alternation takes the first alternative that
    # matches, so a value is masked whole even when a shorter registered value
    # is a piece of it (a password inside a URI that is registered too).
    ordered = sorted(forms, key=lambda f: (-len(_utf8(f)), f))
    as_bytes = [_utf8(f) for f in ordered]
    return _Patterns(
        text=re.compile("|".join(re.escape(f) for f in ordered)),
        data=re.compile(b"|".join(re.escape(b) for b in as_bytes)),
        longest=max(len(b) for b in as_bytes),
    )


class SecretMasker:
    """A set of secret values and the patterns that find them.

    The process has one (``mask_secret`` and ``redact`` use it); tests make
    their own.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._forms: set[str] = set()
        self._patterns = _compile(set())

    def add(self, value: str) -> None:
        """Mask ``value`` and its encodings from now on (short values are ignored)."""
        if not isinstance(value, str):
            raise TypeError(f"mask_secret takes a str, not {type(value).__name__}")
        if len(value) < MIN_SECRET_LENGTH:
            return
        new = encodings(value)
        with self._lock:
            if new <= self._forms:
                return
            self._forms |= new
            self._patterns = _compile(self._forms)

    @property
    def patterns(self) -> _Patterns:
        return self._patterns

    def redact(self, text: str) -> str:
        """``text`` with every masked value replaced by ``***``."""
        pattern = self._patterns.text
        return text if pattern is None else pattern.sub(REPLACEMENT, text)

    def redact_bytes(self, data: bytes) -> bytes:
        """``data`` (UTF-8 or anything else) with every masked value's UTF-8 replaced."""
        pattern = self._patterns.data
        return data if pattern is None else pattern.sub(REPLACEMENT.encode(), data)


_MASKER = SecretMasker()


def default_masker() -> SecretMasker:
    """The process's registry: the one ``mask_secret`` fills."""
    return _MASKER


def mask_secret(value: str) -> None:
    """Replace ``value`` (and its URL-quoted and base64 forms) by ``***`` in this task's log.

    Call it as soon as the task holds the secret, before anything prints it:
    output written before the call is not masked. Values shorter than
    ``MIN_SECRET_LENGTH`` (4) characters are ignored. The mask covers
    whatever this task process and the processes it starts write to their
    stdout and stderr; a value registered in a child process (another Python
    the task started) does not reach this one's mask.
    """
    _MASKER.add(value)


def redact(text: str) -> str:
    """``text`` with every value given to ``mask_secret`` in this process replaced by ``***``."""
    return _MASKER.redact(text)


class StreamRedactor:
    """Masks a byte stream that arrives in arbitrary pieces.

    ``feed`` returns what can be written now; ``flush`` returns the rest.
    A secret may arrive split across two pieces (``print`` makes a write per
    argument; a pipe read may end anywhere), so ``feed`` holds back the last
    ``longest - 1`` bytes, where ``longest`` is the byte length of the longest
    masked form: they might be the start of a secret whose end has not come
    yet. Everything before them is final, since no masked form starting
    there can reach past the end of what arrived. This keeps a line whole in
    the log, secrets with a newline in them (a PEM key) are masked too, and
    no more than one secret's length is ever held back, however long a line
    is. The caller flushes after a short idle time and at the end, so held
    bytes never wait for long; a secret split by a pause longer than that
    idle time is then not recognised.

    The bytes are never decoded, so output in any encoding, or none, passes
    through unchanged but for the masked values (matched as UTF-8).
    """

    def __init__(self, masker: SecretMasker | None = None) -> None:
        self._masker = masker or _MASKER
        self._held = b""

    @property
    def holding(self) -> bool:
        """Whether bytes are held back, waiting for more (or a flush)."""
        return bool(self._held)

    def feed(self, data: bytes) -> bytes:
        """The masked bytes that may be written now, given ``data`` after what came before."""
        buffer = self._held + data
        patterns = self._masker.patterns
        if patterns.data is None:
            self._held = b""
            return buffer
        cut = max(0, len(buffer) - (patterns.longest - 1))
        out: list[bytes] = []
        pos = 0
        for match in patterns.data.finditer(buffer):
            if match.start() >= cut:
                break  # it may yet grow into a longer secret: decide with more data
            out += (buffer[pos : match.start()], REPLACEMENT.encode())
            pos = match.end()
        end = max(pos, cut)  # a secret straddling the cut is complete: written masked
        out.append(buffer[pos:end])
        self._held = buffer[end:]
        return b"".join(out)

    def flush(self) -> bytes:
        """Everything held back, masked: the stream paused or ended."""
        held, self._held = self._held, b""
        return self._masker.redact_bytes(held)
