"""Streaming reader for MediaWiki XML dumps (.xml, .xml.bz2, .xml.gz; UTF-8 or UTF-16).

Compression is recognised by magic bytes, not by the file name, and the text encoding by the byte
order mark or the zero-byte pattern of "<" in UTF-16. The XML is fed to a pull parser in fixed-size
chunks and each <page> element is dropped once read, so memory stays constant whatever the dump size.

A multistream dump (`*-multistream.xml.bz2`, independent bz2 streams of 100 pages each) can be read in parts: its
index (`*-multistream-index.txt.bz2`, lines `OFFSET:PAGE_ID:TITLE`) gives each stream's byte offset, and part K of N
reads the header stream (<siteinfo>) and a contiguous run of about 1/N of the bytes of page streams, so that N
machines together read every page exactly once.
"""

from __future__ import annotations

import bz2
import gzip
import re
import xml.etree.ElementTree as ET
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lm2vec.data.errors import DumpError, require_file

_CHUNK_BYTES = 1 << 20
_BZ2_MAGIC = b"BZh"
_EXPORT_NAMESPACE = re.compile(r"^\{http://www\.mediawiki\.org/xml/export-[\d.]+/\}")
# Localised "#REDIRECT [[...]]" (e.g. "#ПРЕНАСОЧВАНЕ"); pages of old dumps lack the <redirect> element.
_REDIRECT_TEXT = re.compile(r"^\s*#[^\s\[\]]+\s*:?\s*\[\[")

# UTF-16 without a byte order mark: expat needs one, so it is added in front of the first chunk.
_UTF16_WITHOUT_BOM = {
    b"<\x00?\x00": b"\xff\xfe",
    b"<\x00m\x00": b"\xff\xfe",
    b"\x00<\x00?": b"\xfe\xff",
    b"\x00<\x00m": b"\xfe\xff",
}


@dataclass(frozen=True)
class Page:
    """One <page> of the dump, before any cleaning."""

    title: str
    namespace: int
    page_id: str
    text: str
    is_redirect: bool


@dataclass
class SiteInfo:
    """What <siteinfo> says about the wiki: its database name and namespace names by number."""

    dbname: str = ""
    namespaces: dict[int, str] = field(default_factory=dict)

    @property
    def language(self) -> str:
        """Language code of the wiki ("bgwiki" -> "bg"), or "" if the dump does not say."""
        return self.dbname.removesuffix("wiki").replace("_", "-") if self.dbname.endswith("wiki") else ""


def detect_compression(head: bytes) -> str:
    """'bz2', 'gzip' or 'none', from the first bytes of the file."""
    if head.startswith(b"BZh"):
        return "bz2"
    if head.startswith(b"\x1f\x8b"):
        return "gzip"
    return "none"


def detect_encoding(head: bytes) -> str:
    """'utf-16-le', 'utf-16-be' or 'utf-8', from the first decompressed bytes."""
    if head.startswith(b"\xff\xfe") or head[:4] in (b"<\x00?\x00", b"<\x00m\x00"):
        return "utf-16-le"
    if head.startswith(b"\xfe\xff") or head[:4] in (b"\x00<\x00?", b"\x00<\x00m"):
        return "utf-16-be"
    return "utf-8"


@dataclass(frozen=True)
class DumpPart:
    """Part `number` of `count` of a multistream dump, found with the dump's `index`."""

    index: Path
    number: int
    count: int


def stream_offsets(index: Path) -> list[int]:
    """The byte offsets of the page streams that a multistream index (`OFFSET:PAGE_ID:TITLE` lines, .bz2 or plain
    text) lists, in order, each once."""
    require_file(index, DumpError)
    with index.open("rb") as raw:
        compressed = detect_compression(raw.read(4)) == "bz2"
    offsets: list[int] = []
    with bz2.open(index, "rt", encoding="utf-8") if compressed else index.open(encoding="utf-8") as lines:
        try:
            for number, line in enumerate(lines, start=1):
                offset, _, rest = line.partition(":")
                if not offset.strip().isdecimal() or ":" not in rest:
                    raise DumpError("not a multistream index line (OFFSET:PAGE_ID:TITLE)", index, number)
                if not offsets or int(offset) != offsets[-1]:
                    if offsets and int(offset) < offsets[-1]:
                        raise DumpError("the offsets of a multistream index must not decrease", index, number)
                    offsets.append(int(offset))
        except (OSError, EOFError, UnicodeDecodeError) as error:
            raise DumpError(f"unreadable multistream index ({error})", index) from error
    if not offsets:
        raise DumpError("empty multistream index", index)
    return offsets


def part_range(offsets: list[int], end: int, number: int, count: int) -> tuple[int, int]:
    """The bytes [start, stop) of part `number` of `count`: the page streams (they begin at `offsets`; the last one
    ends at `end`) whose start falls in that part's share of the bytes, so parts are contiguous, disjoint, cover every
    stream and hold about as many bytes each."""
    first, total = offsets[0], end - offsets[0]
    starts = [offset for offset in offsets if (offset - first) * count // total == number - 1]
    if not starts:
        return end, end
    following = offsets[offsets.index(starts[-1]) + 1 :]
    return starts[0], following[0] if following else end


class DumpReader:
    """Iterates over the pages of one dump file, or of one part of a multistream dump; `position` and `last_title`
    locate errors and progress."""

    def __init__(self, path: str | Path, part: DumpPart | None = None) -> None:
        self.path = Path(path)
        require_file(self.path, DumpError)
        self.file_size = self.size = self.path.stat().st_size
        with self.path.open("rb") as raw:
            self.compression = detect_compression(raw.read(4))
        self.encoding = "utf-8"
        self.siteinfo = SiteInfo()
        self.last_title = ""
        self.position = 0  # bytes of the file (compressed, as stored) consumed so far
        self.part = part
        # A part reads the header stream and its page streams; `size` and `position` count the bytes of those.
        self._ranges = [] if part is None else self._part_ranges(part)
        if self._ranges:
            self.size = sum(stop - start for start, stop in self._ranges)

    def _part_ranges(self, part: DumpPart) -> list[tuple[int, int]]:
        if self.compression != "bz2":
            raise DumpError(f"{self.path}: --part needs a bz2 multistream dump (*-multistream.xml.bz2)")
        offsets = stream_offsets(part.index)
        if offsets[-1] >= self.file_size:
            raise DumpError(f"{part.index}: lists a stream at byte {offsets[-1]:,}, after the end of {self.path}")
        start, stop = part_range(offsets, self.file_size, part.number, part.count)
        with self.path.open("rb") as raw:
            for offset in {offsets[0], start} - {self.file_size}:
                raw.seek(offset)
                if raw.read(len(_BZ2_MAGIC)) != _BZ2_MAGIC:
                    raise DumpError(f"{part.index}: not the index of {self.path} (no bz2 stream at byte {offset:,})")
        return [(0, offsets[0]), (start, stop)]

    def pages(self) -> Iterator[Page]:
        """All pages in file order; raises DumpError naming the file, byte offset and last good page."""
        with self.path.open("rb") as raw:
            chunks = self._chunks(raw)
            parser = ET.XMLPullParser(events=("start", "end"))
            root: ET.Element | None = None
            first = True
            while True:
                chunk = next(chunks, b"")
                if first:
                    if not chunk:
                        raise self._error("empty file, not a MediaWiki XML dump")
                    self.encoding = detect_encoding(chunk[:4])
                    chunk = _UTF16_WITHOUT_BOM.get(chunk[:4], b"") + chunk
                    first = False
                try:
                    if chunk:
                        parser.feed(chunk)
                    else:
                        parser.close()
                    for event, element in parser.read_events():
                        if root is None:
                            root = self._check_root(element)
                        elif event == "end":
                            page = self._handle_end(element, root)
                            if page is not None:
                                yield page
                except ET.ParseError as error:
                    raise self._error(_describe_parse_error(error, root)) from error
                if not chunk:
                    break

    def _chunks(self, raw: BinaryIO) -> Iterator[bytes]:
        source = _ByteRanges(raw, self._ranges) if self._ranges else raw
        stream = decompressed_stream(source, self.compression)  # type: ignore[arg-type]
        while chunk := self._read(stream):
            self.position = source.tell()
            yield chunk
        self.position = source.tell()
        if self._ranges:  # a part: its header stream, then its page streams
            pages_start, pages_stop = self._ranges[-1]
            if pages_start == pages_stop or pages_stop != self.file_size:
                yield b"</mediawiki>"  # a part without the dump's last stream: close the root that its header opened

    def _read(self, stream: BinaryIO) -> bytes:
        try:
            return stream.read(_CHUNK_BYTES)
        except EOFError as error:
            raise self._error(f"truncated {self.compression} stream ({error})") from error
        except OSError as error:
            raise self._error(f"corrupt {self.compression} data ({error})") from error

    def _check_root(self, element: ET.Element) -> ET.Element:
        if not _EXPORT_NAMESPACE.match(element.tag) or not element.tag.endswith("}mediawiki"):
            raise self._error(f"not a MediaWiki XML dump: the root element is <{_local(element.tag)}>")
        return element

    def _handle_end(self, element: ET.Element, root: ET.Element) -> Page | None:
        name = _local(element.tag)
        if name == "siteinfo":
            self._read_siteinfo(element)
            root.clear()
        elif name == "page":
            page = _page_from_element(element)
            self.last_title = page.title
            root.clear()  # the finished page is dropped: constant memory
            return page
        return None

    def _read_siteinfo(self, element: ET.Element) -> None:
        for child in element.iter():
            if _local(child.tag) == "dbname":
                self.siteinfo.dbname = child.text or ""
            elif _local(child.tag) == "namespace":
                self.siteinfo.namespaces[int(child.get("key", "0"))] = child.text or ""

    def _error(self, message: str) -> DumpError:
        where = f"byte {self.position:,} of {self.size:,}"
        after = f", after page {self.last_title!r}" if self.last_title else ""
        return DumpError(f"{self.path}: {message} (at {where}{after})")


def decompressed_stream(raw: BinaryIO, compression: str) -> BinaryIO:
    """`raw` read through the decompressor that `compression` (from detect_compression) names."""
    if compression == "bz2":
        return bz2.BZ2File(raw)  # handles the multistream dumps as well
    if compression == "gzip":
        return gzip.GzipFile(fileobj=raw)  # type: ignore[return-value]
    return raw


class _ByteRanges:
    """Byte ranges of a file read one after the other as one stream (`read`, and `tell`: the bytes read so far)."""

    def __init__(self, raw: BinaryIO, ranges: list[tuple[int, int]]) -> None:
        self._raw = raw
        self._ranges = deque((start, stop) for start, stop in ranges if stop > start)
        self._consumed = 0

    def read(self, size: int = -1) -> bytes:
        if not self._ranges:
            return b""
        start, stop = self._ranges[0]
        self._raw.seek(start)
        data = self._raw.read(stop - start if size < 0 else min(size, stop - start))
        if len(data) < stop - start:
            self._ranges[0] = (start + len(data), stop)
        else:
            self._ranges.popleft()
        if not data:  # the file is shorter than it was
            self._ranges.clear()
        self._consumed += len(data)
        return data

    def tell(self) -> int:
        return self._consumed


def _describe_parse_error(error: ET.ParseError, root: ET.Element | None) -> str:
    line, column = error.position
    if root is None:
        return f"not an XML file, or not a MediaWiki dump (XML error at line {line}, column {column}: {error})"
    if "no element found" in str(error):
        return f"the XML ends early, the file is truncated (line {line})"
    return f"malformed XML at line {line}, column {column} ({error})"


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _page_from_element(element: ET.Element) -> Page:
    title, namespace, page_id, text, redirect = "", 0, "", "", False
    for child in element:
        name = _local(child.tag)
        if name == "title":
            title = child.text or ""
        elif name == "ns":
            namespace = int(child.text or 0)
        elif name == "id":
            page_id = child.text or ""
        elif name == "redirect":
            redirect = True
        elif name == "revision":
            for part in child:
                if _local(part.tag) == "text":
                    text = part.text or ""
    return Page(title, namespace, page_id, text, redirect or bool(_REDIRECT_TEXT.match(text)))
