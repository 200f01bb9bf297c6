"""Credential redaction for every error message and log record (URL user info, query strings, auth headers).

Owned here so that the error tree, the sources and the logging helpers share one set of rules.
"""

from __future__ import annotations

import logging
import re

__all__ = ["RedactingFilter", "redact", "redact_text"]


def redact(url: str) -> str:
    """Strip ``user:password@`` and the query string from a URL (errors never carry credentials).

    Example:
        >>> redact("https://u:pw@h/a.tar?X-Amz-Signature=s"), redact("a.tar")
        ('https://***@h/a.tar', 'a.tar')
    """
    if "://" not in url:
        return redact_text(url)
    scheme, rest = url.split("://", 1)
    host, sep, path = rest.partition("/")
    if "@" in host:
        host = "***@" + host.rsplit("@", 1)[1]
    return redact_text(f"{scheme}://{host}{sep}{path.split('?', 1)[0]}")


# A URL's user info (``scheme://user:pass@``), the query string of a URL or of a bare path (urllib3 prints
# ``url: /a.tar?sig=...``), and the value of an authorization header or token parameter.
_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^\s/@'\"<>]*@")
_QUERY = re.compile(r"(?P<path>(?:://|/)[^\s?'\"<>]*)\?[^\s'\"<>)\]]*")
_AUTH = re.compile(
    r"(?P<name>\b(?:authorization|x-amz-security-token|x-amz-signature|aws_secret_access_key|secret_key|token)"
    r"['\"]?\s*[:=]\s*['\"]?)(?:(?:Bearer|Basic|AWS4-HMAC-SHA256)\s+)?[^\s'\",}]+",
    re.IGNORECASE,
)


def redact_text(text: str) -> str:
    """``text`` with every credential a URL or header may carry replaced: user info becomes ``***@``, query
    strings are dropped (presigned S3/GCS URLs carry their signature there), ``Authorization: ...`` values become
    ``***``. Applied to every error message, and (see :class:`RedactingFilter`) to every log record of the
    ``atdata_torch`` logger.

    Example:
        >>> redact_text("GET http://u:pw@h:1/a.tar?sig=S failed: Max retries exceeded with url: /a.tar?sig=S")
        'GET http://***@h:1/a.tar failed: Max retries exceeded with url: /a.tar'
        >>> redact_text("headers {'Authorization': 'Bearer TOK'}")
        "headers {'Authorization': '***'}"
    """
    if "@" in text:
        text = _USERINFO.sub(r"\g<scheme>***@", text)
    if "?" in text:
        text = _QUERY.sub(r"\g<path>", text)
    return _AUTH.sub(r"\g<name>***", text)


class RedactingFilter(logging.Filter):
    """A logging filter that renders a record's message with :func:`redact_text` (installed on the
    ``atdata_torch`` logger, so that no URL credential, signature or token reaches a log handler)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # pragma: no cover - a malformed record: leave it to the handler
            return True
        record.msg = redact_text(text)
        record.args = None
        return True


_LOG = logging.getLogger("atdata_torch")
if not any(isinstance(f, RedactingFilter) for f in _LOG.filters):
    _LOG.addFilter(RedactingFilter())
