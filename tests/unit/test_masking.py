"""The secret registry and the stream filter that masks a task's log."""

from __future__ import annotations

import base64
import random
import threading
from urllib.parse import quote, quote_plus

import pytest

from tether.sdk.masking import MIN_SECRET_LENGTH, SecretMasker, StreamRedactor

SECRET = "s3cr/et pä+ss=w~~~"  # every encoding differs, base64 is padded


def _masker(*values: str) -> SecretMasker:
    masker = SecretMasker()
    for value in values:
        masker.add(value)
    return masker


def _forms(value: str) -> list[str]:
    raw = value.encode()
    b64 = base64.b64encode(raw).decode()
    url64 = base64.urlsafe_b64encode(raw).decode()
    return [
        value,
        quote(value, safe=""),
        quote_plus(value),
        b64,
        b64.rstrip("="),
        url64,
        url64.rstrip("="),
    ]


def test_a_value_and_each_of_its_encodings_are_masked() -> None:
    masker = _masker(SECRET)
    forms = _forms(SECRET)
    assert len(set(forms)) == 7  # the value exercises every encoding
    for form in forms:
        assert masker.redact(f"before {form} after") == "before *** after", form
        assert masker.redact_bytes(f"<{form}>".encode()) == b"<***>", form


def test_values_shorter_than_the_minimum_are_not_masked() -> None:
    assert MIN_SECRET_LENGTH == 4
    masker = _masker("abc", "wxyz")
    assert masker.redact("abc abcd wxyz") == "abc abcd ***"


def test_the_longest_value_is_masked_whole() -> None:
    # The password and the URI holding it are both registered, the shorter first.
    masker = _masker("hunter22", "postgres://app:hunter22@db.example/prod")
    assert masker.redact("dsn=postgres://app:hunter22@db.example/prod pw=hunter22") == (
        "dsn=*** pw=***"
    )


def test_unicode_values_are_masked_in_text_and_in_their_utf8() -> None:
    masker = _masker("пароль-密码")
    assert masker.redact("x пароль-密码 y") == "x *** y"
    assert masker.redact_bytes("x пароль-密码 y".encode()) == b"x *** y"
    assert masker.redact(quote("пароль-密码", safe="")) == "***"


def test_only_strings_can_be_registered() -> None:
    with pytest.raises(TypeError, match="takes a str"):
        SecretMasker().add(b"bytes-secret")  # type: ignore[arg-type]


def test_values_registered_from_many_threads_are_all_masked() -> None:
    masker = SecretMasker()
    values = [f"secret-{i:04d}" for i in range(200)]
    threads = [
        threading.Thread(target=lambda part=part: [masker.add(v) for v in part])
        for part in (values[i::8] for i in range(8))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert masker.redact(" ".join(values)) == " ".join(["***"] * len(values))


def _stream(masker: SecretMasker, pieces: list[bytes]) -> bytes:
    redactor = StreamRedactor(masker)
    return b"".join([redactor.feed(p) for p in pieces] + [redactor.flush()])


TEXT = (
    f"user logged in with {SECRET}\nurl=https://u:{quote(SECRET, safe='')}@h/\n"
    f"header: Basic {base64.b64encode(SECRET.encode()).decode()}\n{SECRET}{SECRET}end"
).encode()


def test_a_secret_split_across_two_writes_is_masked_wherever_the_split_falls() -> None:
    masker = _masker(SECRET)
    expected = masker.redact_bytes(TEXT)
    assert SECRET.encode() not in expected
    for cut in range(len(TEXT) + 1):
        assert _stream(masker, [TEXT[:cut], TEXT[cut:]]) == expected, cut


def test_any_chunking_gives_what_masking_the_whole_gives() -> None:
    masker = _masker(SECRET, "other-secret", "short")
    text = TEXT + b"\nother-secret short shor other-secre" + TEXT
    expected = masker.redact_bytes(text)
    rng = random.Random(9)
    for _ in range(300):
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, 40)))
        pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
        assert _stream(masker, pieces) == expected
    assert _stream(masker, [bytes([b]) for b in text]) == expected  # a byte at a time


def test_the_stream_holds_back_at_most_one_secret_length() -> None:
    masker = _masker("0123456789")  # the longest form is its base64: 16 bytes
    redactor = StreamRedactor(masker)
    line = b"a long line of ordinary output that holds no secret at all\n"
    written = redactor.feed(line)
    assert written == line[: len(line) - 15]
    assert redactor.holding
    assert redactor.flush() == line[len(line) - 15 :]
    assert not redactor.holding


def test_with_no_secret_nothing_is_held_back() -> None:
    redactor = StreamRedactor(SecretMasker())
    assert redactor.feed(b"partial lin") == b"partial lin"
    assert not redactor.holding


def test_undecodable_bytes_pass_through_and_secrets_among_them_are_masked() -> None:
    masker = _masker(SECRET)
    junk = bytes(range(256))
    text = junk + SECRET.encode() + b"\xff\xfe\x80" + SECRET.encode()[:5] + junk
    out = _stream(masker, [text[i : i + 7] for i in range(0, len(text), 7)])
    assert out == junk + b"***" + b"\xff\xfe\x80" + SECRET.encode()[:5] + junk


def test_a_secret_registered_while_its_start_is_held_back_is_masked() -> None:
    masker = _masker("first-secret")
    redactor = StreamRedactor(masker)
    out = redactor.feed(b"token: late-")
    masker.add("late-secret")
    out += redactor.feed(b"secret\n") + redactor.flush()
    assert out == b"token: ***\n"
