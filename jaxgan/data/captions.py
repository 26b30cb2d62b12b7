"""Caption text files: decoding that never fails on bad bytes, and one caption per line.

Caption releases (Reed et al.'s CUB and flowers captions, user folders) are mostly UTF-8 but
not always; a file that is not is read as UTF-16 or UTF-32 when it starts with their byte-order
mark, else as Windows-1252 (which maps almost every byte) or, failing that, with replacement
characters, and the example records the repair so that it is counted. Control characters (NUL,
CR, a terminal's escape codes) count as whitespace: a caption is plain text.
"""

from __future__ import annotations

import codecs
import csv
import json
import re
from pathlib import Path
from typing import NamedTuple

NOT_UTF8 = "caption_not_utf8"
# Unicode's control characters (category Cc): C0, DEL and C1.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
# UTF-32's marks first: UTF-32-LE's begins with UTF-16-LE's.
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
         (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def decode_caption_bytes(data: bytes) -> tuple[str, list[str]]:
    """(text, issues): UTF-8 (a BOM is dropped), else UTF-16/32 after their BOM, else cp1252,
    else UTF-8 with U+FFFD; any but UTF-8 adds the issue ``caption_not_utf8``."""
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), [NOT_UTF8]
    try:
        return data.decode("cp1252"), [NOT_UTF8]
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), [NOT_UTF8]


def split_captions(text: str) -> list[str]:
    """Non-empty lines, cleaned (``clean_caption``): one caption per line."""
    return [c for c in map(clean_caption, text.splitlines()) if c]


def read_caption_file(path: str | Path) -> tuple[list[str], list[str]]:
    """(captions, issues) of a text file with one caption per line.

    A missing or unreadable file gives no captions and the issue ``caption_file_missing``;
    an empty one gives no captions (the pipeline skips and counts the example).
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return [], ["caption_file_missing"]
    text, issues = decode_caption_bytes(data)
    return split_captions(text), issues


# Caption indexes: one file that gives the captions of many images (captions.jsonl, captions.csv).
# Each line is decoded on its own, so one non-UTF-8 line marks only the captions it holds.


class CaptionEntry(NamedTuple):
    """One usable line (jsonl) or row (csv) of a caption index."""

    file: str            # as written in the index: a path relative to the dataset root
    captions: list[str]  # whitespace-collapsed, blanks dropped; may be empty
    line: int            # 1-based line number, for messages
    repaired: bool       # the line was not UTF-8 (see decode_caption_bytes)


def clean_caption(text: str) -> str:
    """A caption (or a prompt) as plain text: control characters become spaces and whitespace
    (newlines included) collapses to single spaces.

    Example:
        clean_caption("\x1b[31ma red\r\n circle\x00")  # "[31ma red circle"
    """
    return " ".join(_CONTROL.sub(" ", text).split())


def _decoded_lines(path: Path) -> list[tuple[str, bool]]:
    data = Path(path).read_bytes()
    if data.startswith(tuple(bom for bom, _ in _BOMS)):
        # A UTF-16/32 file's line breaks are several bytes: decode it whole, then split.
        text, _ = decode_caption_bytes(data)
        return [(line, True) for line in text.splitlines(keepends=True)]
    # bytes.splitlines splits only on \n, \r and \r\n, which no UTF-8 or cp1252 character holds.
    lines = []
    for raw in data.splitlines(keepends=True):
        text, issues = decode_caption_bytes(raw)
        lines.append((text, bool(issues)))
    return lines


def read_caption_jsonl(path: str | Path) -> tuple[list[CaptionEntry], list[tuple[int, str]]]:
    """(entries, malformed) of a JSON-lines index.

    Each line is an object with a "file" and a "caption" (string) and/or "captions" (list of
    strings). Blank lines are ignored; any other line that is not such an object is returned
    in ``malformed`` as (line number, why).
    """
    entries, malformed = [], []
    for number, (text, repaired) in enumerate(_decoded_lines(Path(path)), start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except ValueError as e:
            malformed.append((number, f"not JSON ({e})"))
            continue
        captions, why = _jsonl_captions(record)
        if why:
            malformed.append((number, why))
        else:
            entries.append(CaptionEntry(record["file"], [c for c in map(clean_caption, captions) if c],
                                        number, repaired))
    return entries, malformed


def _jsonl_captions(record: object) -> tuple[list[str], str]:
    """(captions, "") of a parsed jsonl line, or ([], why it is malformed)."""
    if not isinstance(record, dict) or not isinstance(record.get("file"), str) or not record["file"].strip():
        return [], 'not an object with a "file" string'
    if "caption" not in record and "captions" not in record:
        return [], 'no "caption" or "captions"'
    single, several = record.get("caption", ""), record.get("captions", [])
    if not isinstance(single, str) or not isinstance(several, list) or not all(isinstance(c, str) for c in several):
        return [], '"caption" must be a string and "captions" a list of strings'
    return [single, *several], ""


def read_caption_csv(path: str | Path) -> tuple[list[CaptionEntry], list[tuple[int, str]]]:
    """(entries, malformed) of a CSV index whose header names the columns "file" and "caption".

    Parsed with the csv module, so quoted fields may hold commas, quotes and newlines. A row
    with the wrong number of fields or an empty file is returned in ``malformed``.

    Raises:
      ValueError: the header lacks a "file" or a "caption" column (one line).
    """
    lines = _decoded_lines(Path(path))
    reader = csv.reader(text for text, _ in lines)
    try:
        header = [name.strip().lower() for name in next(reader)]
    except (StopIteration, csv.Error):
        header = []
    if "file" not in header or "caption" not in header:
        raise ValueError(f"{path}: the header must name the columns file and caption, got {header}")
    file_col, caption_col = header.index("file"), header.index("caption")
    entries, malformed = [], []
    end = reader.line_num
    while True:
        start = end + 1  # a quoted field may span lines: this row is lines start..end
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            malformed.append((start, f"unparsable ({e})"))
            end = reader.line_num
            continue
        end = reader.line_num
        if not row:
            continue
        if len(row) != len(header) or not row[file_col].strip():
            malformed.append((start, f"{len(row)} fields, the header has {len(header)}"
                              if len(row) != len(header) else "empty file field"))
            continue
        caption = clean_caption(row[caption_col])
        repaired = any(flag for _, flag in lines[start - 1:end])
        entries.append(CaptionEntry(row[file_col], [caption] if caption else [], start, repaired))
    return entries, malformed
