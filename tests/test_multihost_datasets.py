"""Multi-process training on an image folder: each process reads its own shard and encodes its
share of the captions into one shared embedding-cache entry (its own file, so that the test
runner can place it beside test_multihost.py's longer tests)."""

import json

from test_multihost import _launch


def test_two_processes_train_on_an_image_folder_with_shared_caption_embeddings(tmp_path):
    """Each process reads its own shard and encodes its share of the captions into one cache
    entry; the checkpoint holds both processes' data positions and the logs the global counts."""
    from PIL import Image

    folder = tmp_path / "images"
    for i in range(20):
        folder.mkdir(exist_ok=True)
        Image.new("RGB", (24, 20), (12 * i, 40, 200 - 9 * i)).save(folder / f"{i:02d}.png")
        (folder / f"{i:02d}.txt").write_text(f"picture {i}\npicture number {i}\n")
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (folder / "zz_broken.txt").write_text("a broken picture\n")
    cache = tmp_path / "cache"
    overrides = [f"data.dataset={folder}", f"data.embedding_cache={cache}", "data.workers=0", "model.width=8",
                 "model.z_dim=16", "model.text_dim=16", "train.batch_size=8", "train.steps=3",
                 "train.checkpoint_every=3", "train.log_every=3", "train.sample_every=3", "eval.every=0"]
    _launch(tmp_path / "multi", overrides, devices=1)
    entries = [p for p in cache.glob("*/*")]
    assert len(entries) == 1 and ".tmp-" not in entries[0].name  # one entry, assembled, no leftovers
    assert json.loads((entries[0] / "meta.json").read_text())["captions"] == 41  # 20 x 2 + 1
    import orbax.checkpoint as ocp

    with ocp.CheckpointManager(tmp_path / "multi" / "checkpoints") as manager:
        position = manager.restore(3, args=ocp.args.Composite(data=ocp.args.JsonRestore()))["data"]
    assert position["process_count"] == 2 and len(position["consumed"]) == 2
    # 3 steps x 4 rows per process (a batch of 8 over 2 processes), plus whatever bad examples each process met
    # in its shard.
    assert all(n >= 12 for n in position["consumed"])
    (row,) = [json.loads(r) for r in (tmp_path / "multi" / "metrics.jsonl").read_text().splitlines()]
    assert row["data/skipped"] == sum(position["consumed"]) - 24 == position["stats"]["skipped"].get("corrupt", 0)
