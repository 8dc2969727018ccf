"""Receive one uploaded file from a multipart request body, counting bytes as they arrive.

Starlette's own form parsing reads the whole body into a spooled file before the route runs, so a size limit
checked there comes after the bytes were received and stored. Here the body is parsed as it streams: the upload
is refused (413) the moment the body passes the limit, and only the ``file`` field is written, into a folder the
service owns, under a name the service chooses (the client's file name is kept only for its suffix and display).
A file whose name has no media suffix is named by its first bytes (`sniffed_suffix`), without decoding it: the
decoders' bounds (`rice.data.media_limits`) then apply to every upload alike.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from python_multipart.multipart import MultipartParser, parse_options_header

from rice.data.frames import IMAGE_SUFFIXES
from rice.data.model_input import VIDEO_SUFFIXES

FIELD = "file"


class UploadError(Exception):
    """A request the service refuses; ``status`` is the HTTP code to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Upload:
    path: Path  # inside the service's temporary folder; the caller deletes it
    filename: str  # the client's name for it (display only, never a path)
    size: int


def client_filename(raw: str) -> str:
    """The last component of the client's file name (browsers may send ``C:\\...`` paths), for display only."""
    name = PureWindowsPath(PurePosixPath(raw).name).name
    return name.strip() or "upload"


def stored_suffix(filename: str) -> str:
    """A media suffix the decoders understand, or ``""`` when the name has none (the content is sniffed later)."""
    suffix = Path(filename).suffix.lower()
    return suffix if suffix in IMAGE_SUFFIXES + VIDEO_SUFFIXES else ""


# The first bytes of the image formats PIL reads; anything else is handed to the video decoders, which sniff the
# container themselves. Only the signature is read: opening the file with PIL to find out (as before) raised
# DecompressionBombError for a large PNG, which nothing caught (a 500).
_IMAGE_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", 0, ".png"), (b"\xff\xd8\xff", 0, ".jpg"), (b"GIF87a", 0, ".png"), (b"GIF89a", 0, ".png"),
    (b"BM", 0, ".png"), (b"WEBP", 8, ".png"), (b"II*\x00", 0, ".png"), (b"MM\x00*", 0, ".png"),
)  # fmt: skip


def sniffed_suffix(path: Path) -> str:
    """``.png``/``.jpg`` for a file that starts like an image PIL reads (``load_image`` then reads it by its
    content, whatever the suffix), else ``.mp4``. Decodes nothing."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    for signature, offset, suffix in _IMAGE_SIGNATURES:
        if head[offset : offset + len(signature)] == signature:
            return suffix
    return ".mp4"


class _FilePart:
    """multipart callbacks that write the ``file`` field's bytes and ignore every other field."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.upload: Upload | None = None
        self._headers: dict[str, bytes] = {}
        self._field, self._value = b"", b""
        self._out = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }  # fmt: skip

    def _part_begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._field.decode("latin-1").lower()] = self._value
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        if options.get(b"name") != FIELD.encode() or self.upload is not None:
            return
        filename = client_filename(options.get(b"filename", b"").decode("utf-8", "replace"))
        path = self.folder / f"upload-{uuid.uuid4().hex}{stored_suffix(filename)}"
        self._out = open(path, "wb")  # noqa: SIM115 - closed in _part_end or close()
        self.upload = Upload(path, filename, 0)

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._out is not None:
            self._out.write(data[start:end])
            self.upload.size += end - start

    def _part_end(self) -> None:
        self.close()

    def close(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None


async def receive_upload(
    content_type: str, content_length: str | None, body: AsyncIterator[bytes], folder: Path, max_bytes: int
) -> Upload:
    """Stream a multipart/form-data body into ``folder`` and return its ``file`` field.

    Raises:
        UploadError: 413 when the body is (declared or found) larger than ``max_bytes``; 422 when it is not
            multipart, has no ``file`` field, or the file is empty. Nothing is left in ``folder`` then.
    """
    limit_mb = max_bytes / 2**20
    too_large = f"upload larger than the limit of {limit_mb:g} MB; send a shorter clip or start the server with a " \
                "larger --max-upload-mb"
    if content_length is not None and content_length.isdigit() and int(content_length) > max_bytes:
        raise UploadError(413, too_large)  # refused before a byte of the body is read
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise UploadError(422, f"send the clip or image as multipart/form-data with a field named {FIELD!r}")
    part = _FilePart(folder)
    parser = MultipartParser(boundary, part.callbacks())
    received = 0
    try:
        async for chunk in body:
            received += len(chunk)
            if received > max_bytes:
                raise UploadError(413, too_large)
            parser.write(chunk)
        parser.finalize()
    except UploadError:
        _discard(part)
        raise
    except Exception as err:  # a malformed body: python-multipart raises its own error types
        _discard(part)
        raise UploadError(422, f"malformed multipart body ({type(err).__name__}: {err})") from None
    part.close()
    if part.upload is None:
        raise UploadError(422, f"no field named {FIELD!r} in the form; send the clip or image as {FIELD!r}")
    if part.upload.size == 0:
        _discard(part)
        raise UploadError(422, f"{part.upload.filename}: the uploaded file is empty")
    if not part.upload.path.suffix:  # no media suffix in the client's name: name it by its first bytes
        path = part.upload.path
        part.upload.path = path.rename(path.with_suffix(sniffed_suffix(path)))
    return part.upload


def _discard(part: _FilePart) -> None:
    part.close()
    if part.upload is not None:
        part.upload.path.unlink(missing_ok=True)
