"""Fault suite, hostile inputs: prompts, image files, caption encodings, report strings.

Each input is a one-line error or a documented clean skip, never a traceback, never a lost
file. Only sampling runs a model (the committed fixture workdir, one call for every accepted
prompt); images, captions and the report use tiny files built here.
"""

import codecs
import io
import json
import os
import re
import resource
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from faults import assert_nothing_lost, count_input, count_traceback, run_cli, snapshot
from PIL import Image

from jaxgan.data.captions import clean_caption
from jaxgan.data.folder import ImageFolderSource
from jaxgan.data.prepare import PrepareExample

FIXTURES = Path(__file__).parent / "fixtures"

# --- prompts ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "run"
    shutil.copytree(FIXTURES / "workdir_dcgan", path)
    return path


@pytest.mark.parametrize("prompt", ["", "   ", "\x00", "\x1b\r\n\t\x7f", "\x85\x9b"],
                         ids=["empty", "spaces", "nul", "controls", "c1-controls"])
def test_a_prompt_without_text_is_refused_before_loading_anything(workdir, prompt):
    before = snapshot(workdir)
    outcome = run_cli(["sample", "--workdir", str(workdir), "--prompt", "a red circle", "--prompt", prompt])
    assert outcome.code == 2
    assert "empty prompt" in outcome.one_line_error() and "--prompt 2 has none" in outcome.err
    assert_nothing_lost(before, snapshot(workdir))
    assert not (workdir / "samples").exists()


@pytest.mark.parametrize("flags, message", [
    (["--seed", "-1"], "--seed must be in [0, 4294967292] for --num-per-prompt 4, got -1"),
    (["--seed", str(2**32 - 2)], "--seed must be in [0, 4294967292]"),
    (["--num-per-prompt", "0"], "--num-per-prompt must be at least 1"),
])
def test_bad_sample_flags_are_one_line_before_loading_anything(workdir, flags, message):
    # Noise keys are uint32: a seed outside them was an OverflowError traceback after loading.
    outcome = run_cli(["sample", "--workdir", str(workdir), "--prompt", "a red circle", *flags])
    assert outcome.code == 2 and message in outcome.one_line_error()
    assert not (workdir / "samples").exists()


HOSTILE_PROMPTS = {
    "long": "a small red circle in the top left " * 300,  # 10,500 characters
    "nul": "a red\x00 circle",
    "ansi": "\x1b[31ma red circle\x1b[0m\x1b]0;pwned\x07",
    "cr": "a red circle\rOVERWRITTEN",
    "rtl": "دائرة حمراء صغيرة",
    "bidi-override": "a \u202eelcric der\u202c",
    "emoji": "a 🔴 circle 🎉👩‍👩‍👧",
    "path": "../../../../tmp/evil/../x.png",
    "html": "<script>alert(1)</script>",
}


@pytest.mark.usefixtures("quick_compiles")
def test_hostile_prompts_sample_as_plain_text_under_safe_names(workdir, tmp_path):
    out = tmp_path / "out"
    prompts = list(HOSTILE_PROMPTS.values())
    argv = ["sample", "--workdir", str(workdir), "--num-per-prompt", "1", "--out", str(out)]
    for prompt in prompts:
        argv += ["--prompt", prompt]
    before, around = snapshot(workdir), snapshot(tmp_path)
    count_input(len(prompts) - 1)  # run_cli counts the call as one
    outcome = run_cli(argv)
    assert outcome.code == 0, outcome.err
    # The long prompt is cut to the encoder's length, with a note; the others fit.
    notes = [line for line in outcome.out.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "prompt 1 is longer than the text encoder's" in notes[0]
    # File names are indices, never prompt text; nothing is written outside --out.
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"{i:03d}_000.png" for i in range(len(prompts))] + ["grid.png", "manifest.jsonl"])
    assert set(snapshot(tmp_path)) - set(around) == {f"out/{n}" for n in names}
    # The manifest holds each prompt cleaned as training captions are: no control characters.
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [m["prompt"] for m in manifest] == [clean_caption(p) for p in prompts]
    assert manifest[3]["prompt"] == "a red circle OVERWRITTEN" and manifest[1]["prompt"] == "a red circle"
    assert all(not re.search("[\x00-\x1f\x7f-\x9f]", m["prompt"]) for m in manifest)
    assert manifest[4]["prompt"] == HOSTILE_PROMPTS["rtl"] and manifest[6]["prompt"] == HOSTILE_PROMPTS["emoji"]
    assert_nothing_lost(before, snapshot(workdir))


# --- images in an image folder ---------------------------------------------------------------


def _png(width: int, height: int, pixels: bytes = b"") -> bytes:
    """A PNG whose header claims width x height, with ``pixels`` (zlib'd) as its only data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels))
            + chunk(b"IEND", b""))


def _encode(fmt: str, size: tuple[int, int] = (48, 40)) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def _jpeg_claiming(width: int, height: int) -> bytes:
    data = _encode("JPEG")
    sof = data.index(b"\xff\xc0")  # baseline frame header: marker, length, precision, height, width
    return data[:sof + 5] + struct.pack(">HH", height, width) + data[sof + 9:]


# file name -> its bytes, and the reason the pipeline skips it (None: used).
IMAGES = {
    "good.png": (_encode("PNG"), None),
    "one_pixel.png": (_png(1, 1, b"\x00\xff\x00\x00"), None),
    "zero_bytes.jpg": (b"", "empty"),
    "truncated.jpg": (_encode("JPEG")[:len(_encode("JPEG")) // 2], "truncated"),
    "truncated.png": (_encode("PNG")[:len(_encode("PNG")) // 2], "truncated"),
    "header_only.png": (_encode("PNG")[:40], "corrupt"),
    "bomb.png": (_png(30000, 30000, b"\x00" * 4096), "too_large"),
    "bomb.jpg": (_jpeg_claiming(30000, 30000), "too_large"),
    "postscript.jpg": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\n",
                       "corrupt"),
    "document.jpg": (b"%PDF-1.4\n1 0 obj<< /Type /Catalog >>endobj\ntrailer<< /Root 1 0 R >>\n%%EOF\n", "corrupt"),
}


@pytest.fixture
def hostile_folder(tmp_path) -> Path:
    root = tmp_path / "images"
    root.mkdir()
    for name, (data, _) in IMAGES.items():
        (root / name).write_bytes(data)
    (root / "loop.jpg").symlink_to("loop.jpg")       # a symlink to itself: ELOOP
    (root / "dangling.png").symlink_to("nowhere.png")
    (root / "back").symlink_to(".")                   # a folder loop
    os.mkfifo(root / "fifo.jpg")                      # reading it would block forever
    (root / "folder.jpg").mkdir()                     # a folder named like an image
    (root / "folder.jpg" / "inside.png").write_bytes(_encode("PNG", (8, 8)))
    (root / "captions.jsonl").write_text("".join(
        json.dumps({"file": f, "caption": f"a picture called {f}"}) + "\n" for f in [*IMAGES, "folder.jpg/inside.png"]))
    return root


def test_hostile_image_files_are_skipped_and_counted(hostile_folder):
    before = snapshot(hostile_folder)
    count_input(len(IMAGES) + 5)  # the files above and the links, the FIFO and the folder
    try:
        source = ImageFolderSource(hostile_folder)
        prepare = PrepareExample(source, resolution=32, fit="crop")
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        prepared = {source.path(i): prepare(source[i], np.random.default_rng(i)) for i in range(len(source))}
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    except Exception:  # noqa: BLE001 - what the suite counts
        count_traceback("reading a folder of hostile images")
    # The links, the FIFO and the back-link loop are left out at the scan and counted.
    assert source.index_issues == {"not_a_file": 3}
    assert sorted(prepared) == sorted([*IMAGES, "folder.jpg/inside.png"])
    skipped = {name: item.get("skip") for name, item in prepared.items()}
    assert skipped == {**{name: reason for name, (_, reason) in IMAGES.items()}, "folder.jpg/inside.png": None}
    for name in ("good.png", "one_pixel.png", "folder.jpg/inside.png"):
        assert prepared[name]["image"].shape == (32, 32, 3) and prepared[name]["image"].dtype == np.uint8
    assert "upscaled" in prepared["one_pixel.png"]["issues"]
    # 30000 x 30000 RGB would be 2.7 GB: refused from the header, nothing allocated.
    assert grown_mb < 200, f"peak memory grew by {grown_mb:.0f} MB"
    assert_nothing_lost(before, snapshot(hostile_folder))


# --- caption files in bad encodings ----------------------------------------------------------


CAPTIONS = {  # sidecar .txt bytes -> (captions read, repaired: counted as caption_not_utf8)
    "latin1": ("un oiseau café\nà l'aube\n".encode("latin-1"), ["un oiseau café", "à l'aube"], True),
    "utf16-le-bom": (codecs.BOM_UTF16_LE + "a red bird\r\nun café\r\n".encode("utf-16-le"),
                     ["a red bird", "un café"], True),
    "utf16-be-bom": (codecs.BOM_UTF16_BE + "a blue bird\n".encode("utf-16-be"), ["a blue bird"], True),
    "utf32-bom": ("a green bird\n".encode("utf-32"), ["a green bird"], True),
    "utf8-bom": (codecs.BOM_UTF8 + b"a grey bird\n", ["a grey bird"], False),
    "invalid-utf8": (b"a \x81\x8d bird\n", ["a \ufffd\ufffd bird"], True),
    "nul-bytes": (b"a yellow\x00 bird\x00\n\x00\n", ["a yellow bird"], False),
    "ansi": (b"\x1b[31ma red bird\x1b[0m\n", ["[31ma red bird [0m"], False),
}


def test_caption_files_in_bad_encodings_are_decoded_and_counted(tmp_path):
    root = tmp_path / "captions"
    root.mkdir()
    for name, (data, _, _) in CAPTIONS.items():
        (root / f"{name}.png").write_bytes(_encode("PNG", (8, 8)))
        (root / f"{name}.txt").write_bytes(data)
    before = snapshot(root)
    count_input(len(CAPTIONS))
    source = ImageFolderSource(root)
    for i in range(len(source)):
        name = source.path(i).removesuffix(".png")
        _, captions, repaired = CAPTIONS[name]
        example = source[i]
        assert example["captions"] == captions, name
        assert ("caption_not_utf8" in example["issues"]) == repaired, name
    assert_nothing_lost(before, snapshot(root))


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_a_caption_index_in_utf16_or_utf32_is_read_whole(tmp_path, encoding):
    # Its line breaks are several bytes: splitting the raw bytes at b"\n" would garble every line.
    root = tmp_path / "index"
    root.mkdir()
    for name in ("a.png", "b.png"):
        (root / name).write_bytes(_encode("PNG", (8, 8)))
    lines = [json.dumps({"file": "a.png", "caption": "a café bird"}, ensure_ascii=False),
             "not json", json.dumps({"file": "b.png", "captions": ["a\x00 bird", "two"]})]
    (root / "captions.jsonl").write_bytes("\n".join(lines).encode(encoding))
    count_input()
    source = ImageFolderSource(root)
    assert source.captions(0) == ["a café bird"] and source.captions(1) == ["a bird", "two"]
    assert source.index_issues == {"index_malformed": 1, "caption_not_utf8": 2}


def test_a_caption_csv_with_nul_bytes_and_mixed_encodings_is_repaired_line_by_line(tmp_path):
    root = tmp_path / "csv"
    root.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        (root / name).write_bytes(_encode("PNG", (8, 8)))
    (root / "captions.csv").write_bytes(b'file,caption\na.png,a red\x00 bird\nb.png,"caf\xe9, \x1b[1mbold"\n'
                                        b"\x00\x00\x00\nc.png,\xff\xfe\n")
    count_input(4)
    source = ImageFolderSource(root)
    assert [source.captions(i) for i in range(3)] == [["a red bird"], ["café, [1mbold"], ["ÿþ"]]
    assert [source[i]["issues"] for i in range(3)] == [[], ["caption_not_utf8"], ["caption_not_utf8"]]
    assert source.index_issues == {"index_malformed": 1, "caption_not_utf8": 2}


# --- report inputs with HTML in every string -------------------------------------------------


SCRIPT = "<script>alert(1)</script>"


def _hostile_run(root: Path) -> Path:
    workdir = root / f"run{SCRIPT.replace('/', '')}"
    (workdir / "samples").mkdir(parents=True)
    (workdir / "eval").mkdir()
    (workdir / "config.json").write_text(json.dumps({
        "data": {"dataset": SCRIPT}, "model": {"arch": f"<img src=x onerror=alert(1)>{SCRIPT}", "resolution": 32},
        "train": {SCRIPT: SCRIPT}}))
    rows = [{"step": s, "d_loss": 1.0, "g_loss": 2.0, "d_real_logit": 0.1, "d_fake_logit": -0.1, SCRIPT: SCRIPT}
            for s in (1, 2)]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (workdir / "eval.jsonl").write_text(json.dumps({"step": SCRIPT, "protocol_hash": SCRIPT, "fid": SCRIPT}) + "\n")
    (workdir / "eval" / f"step_000002-{SCRIPT.replace('/', '')}.json").write_text(
        json.dumps({"protocol": {SCRIPT: SCRIPT, "features": SCRIPT}}))
    (workdir / "samples" / "step_000002.png").write_bytes(_encode("PNG", (8, 8)))
    (workdir / "samples" / f"step_{SCRIPT.replace('/', '')}.png").write_bytes(_encode("PNG", (8, 8)))
    (workdir / "samples" / "prompts.json").write_text(json.dumps([SCRIPT, "a red circle", "</li><script>x"]))
    return workdir


def test_report_escapes_html_in_every_input(tmp_path):
    workdir = _hostile_run(tmp_path)
    before = snapshot(workdir)
    count_input(8)  # the workdir name, config, metrics, eval log, protocol, grid name, prompts, sample names
    outcome = run_cli(["report", "--workdir", str(workdir), "--out", str(tmp_path / "report.html")])
    assert outcome.code == 0, outcome.err
    page = (tmp_path / "report.html").read_text()
    assert "<script" not in page.lower() and "<img src=x" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # shown, as text
    assert_nothing_lost(before, snapshot(workdir))


@pytest.mark.parametrize("name, content", [
    ("config.json", "[1, 2]"),
    ("config.json", '{"data": ["x"], "model": "dcgan"}'),
    ("config.json", b"\xff\xfe{}"),
    ("samples/prompts.json", '{"0": "<script>"}'),
    ("eval/step_000002-x.json", '{"protocol": ["<script>"]}'),
    ("eval.jsonl", '["<script>"]\n{"step": 1, "fid": "<script>"}\n'),
], ids=["config-list", "config-sections-wrong", "config-not-utf8", "prompts-object", "protocol-list",
        "eval-rows-wrong"])
def test_malformed_report_inputs_are_one_line_or_a_note(tmp_path, name, content):
    workdir = _hostile_run(tmp_path)
    path = workdir / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(workdir)
    outcome = run_cli(["report", "--workdir", str(workdir), "--out", str(tmp_path / "report.html")])
    if outcome.code == 2:
        assert "config.json" in outcome.one_line_error()
    else:
        assert outcome.code == 0, outcome.err
        page = (tmp_path / "report.html").read_text()
        assert "<script" not in page.lower()
        if name != "config.json":
            assert "Skipped inputs" in page
    assert_nothing_lost(before, snapshot(workdir))
