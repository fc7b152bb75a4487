"""pgqueue/executor/redaction.py: the one redaction of URLs and headers that can carry a credential."""

from __future__ import annotations

import pytest

from pgqueue.executor import redaction
from pgqueue.executor.redaction import REDACTED


@pytest.mark.parametrize(("url", "shown"), [
    ("https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?key=AIzaSECRET",
     f"https://generativelanguage.googleapis.com/v1beta/models/m:generateContent?key={REDACTED}"),
    ("https://user:hunter22@api.example.com/x", f"https://user:{REDACTED}@api.example.com/x"),
    ("https://tokenonly@api.example.com/x", f"https://{REDACTED}@api.example.com/x"),
    ("https://s3.example.com/o?X-Amz-Signature=abc123&X-Amz-Date=20260101&page=2",
     f"https://s3.example.com/o?X-Amz-Signature={REDACTED}&X-Amz-Date=20260101&page=2"),
    ("http://h/p?access_token=t0k3n&client_secret=s3cr3t&flag&empty=",
     f"http://h/p?access_token={REDACTED}&client_secret={REDACTED}&flag&empty="),
    ("http://h/p?sig=abc&code=xyz&apiKey=k", f"http://h/p?sig={REDACTED}&code={REDACTED}&apiKey={REDACTED}"),
    ("http://h/plain?page=2&sort=asc", "http://h/plain?page=2&sort=asc"),
    ("http://[::1/broken", REDACTED),
])
def test_urls_are_shown_without_their_credentials(url: str, shown: str) -> None:
    assert redaction.url(url) == shown


def test_secrets_are_scrubbed_from_any_text_in_every_encoding() -> None:
    secrets = redaction.Secrets.of(
        "https://u:p%40ssw0rd!@h/x?key=AIza/KEY+1&page=2",
        {"Authorization": "Bearer sk-live-123456", "X-Custom": "not-a-secret-value"},
        ["extra-key-789"],
    )
    text = ("GET https://u:p%40ssw0rd!@h/x?key=AIza/KEY+1 failed; p@ssw0rd! quoted; AIza%2FKEY%2B1 escaped;"
            " header sk-live-123456 and Bearer sk-live-123456; extra-key-789; not-a-secret-value; page=2")
    scrubbed = secrets.scrub(text)
    gone = ("p%40ssw0rd!", "p@ssw0rd!", "AIza/KEY+1", "AIza%2FKEY%2B1", "sk-live-123456", "extra-key-789")
    for secret in gone:
        assert secret not in scrubbed, (secret, scrubbed)
    assert "not-a-secret-value" in scrubbed and "page=2" in scrubbed and REDACTED in scrubbed


def test_short_values_are_not_scrubbed_from_text() -> None:
    # A four-letter "key" would otherwise rewrite every word containing it.
    assert redaction.Secrets.of("http://h/?key=test").scrub("a test of the latest") == "a test of the latest"
    assert redaction.Secrets.of("http://h/?key=test").values == ()
