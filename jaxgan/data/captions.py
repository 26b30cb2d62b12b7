"""Caption text files: decoding that never fails on bad bytes, and one caption per line.

Caption releases (Reed et al.'s CUB and flowers captions, user folders) are mostly UTF-8 but
not always; a file that is not is read as Windows-1252 (which maps almost every byte) or, failing
that, with replacement characters, and the example records the repair so that it is counted.
"""

from __future__ import annotations

from pathlib import Path

NOT_UTF8 = "caption_not_utf8"


def decode_caption_bytes(data: bytes) -> tuple[str, list[str]]:
    """(text, issues): UTF-8 (a BOM is dropped), else cp1252, else UTF-8 with U+FFFD."""
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError:
        pass
    try:
        return data.decode("cp1252"), [NOT_UTF8]
    except UnicodeDecodeError:
        return data.decode("utf-8", errors="replace"), [NOT_UTF8]


def split_captions(text: str) -> list[str]:
    """Non-empty lines, whitespace collapsed: one caption per line."""
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


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
