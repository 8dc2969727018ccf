"""HTTP file transfer for dataset downloads: redirects, confirmation pages, Range resume, retries, checksums.

Only the standard library is used (``urllib``): every file host we meet speaks plain HTTP/1.1, and a new
dependency would buy nothing here. The one non-obvious step is the *confirmation page*: hosts such as Google
Drive answer a request for a large file with an HTML page ("file too large to scan, download anyway?") that
holds a form or a link carrying a ``confirm=`` token. :func:`fetch_file` recognises an HTML answer where a
binary was expected, parses the page and follows the form/link.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from http.cookiejar import CookieJar
from pathlib import Path
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

USER_AGENT = "rice-downloader/0.1 (+https://github.com/; python-urllib)"
CHUNK = 1 << 20  # 1 MiB reads keep Python overhead negligible against the network
_MAX_HTML = 2 << 20  # a confirmation page is small; never buffer more than this
_MAX_CONFIRM_HOPS = 3

ProgressFn = Callable[[int], None]


class DownloadError(RuntimeError):
    """A file could not be fetched (after retries when the failure was transient)."""


class _Transient(Exception):
    """A failure worth retrying (timeout, reset connection, 5xx, short body, checksum mismatch)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Delays grow as ``backoff * 2**attempt`` capped at ``max_delay`` (tests use tiny values)."""

    attempts: int = 5
    backoff: float = 2.0
    max_delay: float = 120.0
    timeout: float = 60.0  # seconds without a byte before a read is abandoned

    def delay(self, attempt: int) -> float:
        return min(self.max_delay, self.backoff * (2**attempt))


@dataclass(frozen=True)
class FetchResult:
    path: Path
    size: int
    sha256: str
    resumed_from: int  # bytes already on disk (.part) when the successful attempt began
    attempts: int


class _KeepMethodRedirect(urllib.request.HTTPRedirectHandler):
    """urllib turns a redirected HEAD into a GET (which would start sending the whole file): keep HEAD.
    Redirects to anything but http/https are refused."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001, ANN201
        # Only HTTP(S) is followed: a redirect to file:// or ftp:// would read from elsewhere than the host asked.
        if urlsplit(newurl).scheme.lower() not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"redirect to a non-HTTP URL {newurl!r} refused", headers, fp)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and req.get_method() == "HEAD":
            new.method = "HEAD"
        return new


def make_opener() -> urllib.request.OpenerDirector:
    """An opener with a cookie jar (Drive's confirmation step sets a cookie) that follows redirects."""
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(CookieJar()), _KeepMethodRedirect())


def sha256_file(path: str | Path, chunk: int = CHUNK) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksum_matches(actual: str, expected: str) -> bool:
    """``expected`` is a full hex digest or ``"prefix*suffix"`` when only part of it is published."""
    actual, expected = actual.lower(), expected.lower().replace("…", "*")
    if "*" in expected:
        prefix, _, suffix = expected.partition("*")
        return actual.startswith(prefix) and actual.endswith(suffix.strip("*"))
    return actual == expected


def _request(url: str, start: int = 0, method: str = "GET", if_range: str | None = None) -> urllib.request.Request:
    headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
    if start:
        headers["Range"] = f"bytes={start}-"
        if if_range:
            headers["If-Range"] = if_range
    return urllib.request.Request(url, headers=headers, method=method)


# ----------------------------------------------------------------------------------------------- resume validators
# A ``.part`` must only be continued with bytes of the same version of the file: the ETag or Last-Modified of the
# response that started it is kept next to it, sent back as ``If-Range``, and a server whose file changed answers
# with the whole new file (200) instead of the rest of the old one (206).
def _validator_path(part: Path) -> Path:
    return part.with_name(part.name + ".validator")


def _validators_of(resp) -> dict[str, str | None]:  # noqa: ANN001
    return {"etag": resp.headers.get("ETag"), "last_modified": resp.headers.get("Last-Modified")}


def _save_validators(part: Path, validators: dict[str, str | None], total: int | None) -> None:
    _validator_path(part).write_text(json.dumps({**validators, "total": total}))


def _load_validators(part: Path) -> dict[str, str | int | None]:
    try:
        loaded = json.loads(_validator_path(part).read_text())
        return loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError):
        return {}


def _if_range(validators: dict[str, str | int | None]) -> str | None:
    """The strong ETag if there is one (a weak one is not allowed in If-Range), else the Last-Modified date."""
    etag = validators.get("etag")
    if isinstance(etag, str) and etag and not etag.startswith("W/"):
        return etag
    modified = validators.get("last_modified")
    return modified if isinstance(modified, str) and modified else None


def _drop_part(part: Path) -> None:
    part.unlink(missing_ok=True)
    _validator_path(part).unlink(missing_ok=True)


def _is_transient_http(code: int) -> bool:
    return code in (408, 425, 429) or code >= 500


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")
_CONTENT_RANGE_UNSAT = re.compile(r"bytes\s+\*/(\d+)")


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``"bytes 100-199/1000"`` -> ``(100, 199, 1000)``; None when absent or unparsable."""
    match = _CONTENT_RANGE.match(value or "")
    if not match:
        return None
    total = None if match.group(3) == "*" else int(match.group(3))
    return int(match.group(1)), int(match.group(2)), total


class _ConfirmPageParser(HTMLParser):
    """Collects forms (action + inputs) and link targets of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.links: list[str] = []
        self._form: tuple[str, dict[str, str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attr = {k: v or "" for k, v in attrs}
        if tag == "form":
            self._form = (attr.get("action", ""), {})
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and attr.get("name"):
            self._form[1][attr["name"]] = attr.get("value", "")
        elif tag == "a" and attr.get("href"):
            self.links.append(attr["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None


def find_confirmation_url(html: str, base_url: str) -> str | None:
    """The "download anyway" target of a file host's warning page, or None when the page has none.

    Looks for (1) a form carrying a ``confirm`` input (Google Drive's ``download-form``), then (2) a link
    whose query has ``confirm=`` (the older Drive page), then (3) a bare ``confirm=TOKEN`` in a script,
    which is appended to the original URL.
    """
    parser = _ConfirmPageParser()
    parser.feed(html)
    for action, inputs in parser.forms:
        if "confirm" in inputs:
            target = urljoin(base_url, action or base_url)
            parts = urlsplit(target)
            query = "&".join(q for q in (parts.query, urlencode(inputs)) if q)
            return urlunsplit(parts._replace(query=query))
    for href in parser.links:
        if "confirm=" in href:
            return urljoin(base_url, href)
    match = re.search(r"confirm=([0-9A-Za-z_\-]+)", html)
    if match:
        sep = "&" if urlsplit(base_url).query else "?"
        return f"{base_url}{sep}confirm={match.group(1)}"
    return None


def _open(opener: urllib.request.OpenerDirector, url: str, start: int, timeout: float, if_range: str | None = None):
    """Open ``url`` (from byte ``start``), stepping through up to three confirmation pages."""
    for _ in range(_MAX_CONFIRM_HOPS + 1):
        resp = opener.open(_request(url, start, if_range=if_range), timeout=timeout)
        ctype = resp.headers.get("Content-Type", "")
        if not ctype.lower().startswith("text/html"):
            return resp
        page = resp.read(_MAX_HTML).decode("utf-8", "replace")
        base = resp.geturl()
        resp.close()
        target = find_confirmation_url(page, base)
        if target is None:
            title = re.search(r"<title>(.*?)</title>", page, re.I | re.S)
            raise DownloadError(
                f"{url}: the server sent an HTML page ({(title.group(1).strip() if title else 'no title')!r}) "
                "instead of the file and it has no download-anyway link; the host may have hit its quota. "
                "Try again later or pass a mirror URL."
            )
        url = target
    raise DownloadError(f"{url}: more than {_MAX_CONFIRM_HOPS} confirmation pages; giving up")


def _transfer(
    opener: urllib.request.OpenerDirector, url: str, part: Path, timeout: float, on_progress: ProgressFn | None
) -> tuple[int, "hashlib._Hash", int | None]:
    """One attempt: resume ``part`` from its size. Returns (resumed_from, running sha256, expected total)."""
    have = part.stat().st_size if part.exists() else 0
    digest = hashlib.sha256()
    known = _load_validators(part) if have else {}
    try:
        resp = _open(opener, url, have, timeout, _if_range(known))
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:
            # Range not satisfiable: either the .part is already complete or it is longer than the file.
            match = _CONTENT_RANGE_UNSAT.match(err.headers.get("Content-Range", "") or "")
            if match and int(match.group(1)) == have:
                with open(part, "rb") as fh:
                    while block := fh.read(CHUNK):
                        digest.update(block)
                return have, digest, have
            _drop_part(part)
            raise _Transient(f"range {have}- not satisfiable; restarting from 0") from None
        raise
    with resp:
        total: int | None = None
        if have and resp.status == 206:
            rng = parse_content_range(resp.headers.get("Content-Range"))
            if rng is None or rng[0] != have:
                _drop_part(part)
                raise _Transient(f"server answered range {rng} to a request from byte {have}; restarting")
            total = rng[2]
            # A server that ignores If-Range still gives itself away by a new ETag or a new length.
            now = _validators_of(resp)
            changed = [k for k in ("etag", "last_modified") if known.get(k) and now[k] and known[k] != now[k]]
            if changed or (known.get("total") is not None and total is not None and known["total"] != total):
                _drop_part(part)
                what = ", ".join(changed) or "length"
                raise _Transient(f"the file changed on the server since the partial download began (new {what}); "
                                 "restarting from 0")
            with open(part, "rb") as fh:  # the checksum covers the bytes already on disk too
                while block := fh.read(CHUNK):
                    digest.update(block)
            mode = "ab"
        else:
            # 200 to a Range request: the server ignores ranges, so the body is the whole file: start over.
            have = 0
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            mode = "wb"
            _save_validators(part, _validators_of(resp), total)
        if on_progress is not None and have:
            on_progress(have)
        with open(part, mode) as out:
            while block := resp.read(CHUNK):
                out.write(block)
                digest.update(block)
                if on_progress is not None:
                    on_progress(len(block))
    return have, digest, total


def fetch_file(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    expected_size: int | None = None,
    policy: RetryPolicy = RetryPolicy(),
    opener: urllib.request.OpenerDirector | None = None,
    on_progress: ProgressFn | None = None,
    on_restart: Callable[[], None] | None = None,
) -> FetchResult:
    """Download ``url`` to ``dest`` through ``dest.part``, resuming an existing ``.part`` with a Range request.

    The ``.part`` file is renamed to ``dest`` only after its size matches the server's (Content-Length or
    Content-Range total, and ``expected_size`` when given) and its sha256 matches ``sha256`` when given
    (full hex or ``"prefix*suffix"``). Transient failures (timeouts, resets, 5xx/429, short bodies, checksum
    mismatches) are retried ``policy.attempts`` times with exponential backoff; a 4xx fails at once.

    Raises:
        DownloadError: the file could not be fetched; the message names the URL and the last cause.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    opener = opener or make_opener()
    last: str = "no attempt made"
    for attempt in range(1, policy.attempts + 1):
        try:
            if attempt > 1 and on_restart is not None:
                on_restart()
            resumed, digest, total = _transfer(opener, url, part, policy.timeout, on_progress)
            size = part.stat().st_size
            for want, what in ((total, "server length"), (expected_size, "expected size")):
                if want is not None and size != want:
                    if size > want:
                        _drop_part(part)
                    raise _Transient(f"got {size} bytes, {what} is {want}")
            actual = digest.hexdigest()
            if sha256 and not checksum_matches(actual, sha256):
                _drop_part(part)
                raise _Transient(f"sha256 {actual} does not match the expected {sha256}")
            os.replace(part, dest)
            _validator_path(part).unlink(missing_ok=True)
            return FetchResult(dest, size, actual, resumed, attempt)
        except urllib.error.HTTPError as err:
            last = f"HTTP {err.code} {err.reason}"
            if not _is_transient_http(err.code):
                raise DownloadError(f"{url}: {last}") from None
        except (_Transient, http.client.HTTPException, OSError) as err:  # URLError and timeouts are OSErrors
            if isinstance(err, OSError) and err.errno == 28:  # ENOSPC: retrying cannot help
                raise DownloadError(f"{url}: {err}") from None
            reason = err.reason if isinstance(err, urllib.error.URLError) else err
            if isinstance(reason, (socket.timeout, TimeoutError)):
                last = f"timed out after {policy.timeout:g} s"
            else:
                last = str(err) if isinstance(err, _Transient) else f"{type(err).__name__}: {err}"
        if attempt < policy.attempts:
            time.sleep(policy.delay(attempt - 1))
    raise DownloadError(f"{url}: {last} (gave up after {policy.attempts} attempts)")


def probe(url: str, *, timeout: float = 30.0, opener: urllib.request.OpenerDirector | None = None) -> int | None:
    """The size the server reports for ``url`` (HEAD, then a one-byte GET), or None when it does not say.

    Raises:
        DownloadError: the server answered with an HTTP error or could not be reached.
    """
    opener = opener or make_opener()
    try:
        with opener.open(_request(url, method="HEAD"), timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            if not resp.headers.get("Content-Type", "").startswith("text/html") and length and length.isdigit():
                return int(length)
    except urllib.error.HTTPError as err:
        if err.code not in (403, 405, 501):
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from None
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{url}: {err}") from None
    try:  # some hosts refuse HEAD: ask for one byte and read the total from Content-Range
        req = _request(url)
        req.add_header("Range", "bytes=0-0")
        with opener.open(req, timeout=timeout) as resp:
            rng = parse_content_range(resp.headers.get("Content-Range"))
            return rng[2] if rng else None
    except (urllib.error.URLError, OSError):
        return None
