"""Safe reading of official release files: tensors only, and a vocabulary pickle that cannot run code."""

import os
import pickle
import sys

import numpy as np
import pytest

from jaxgan.importers import torch_files
from jaxgan.importers.torch_files import ImportFileError

torch = pytest.importorskip("torch")  # in the test extra: CI always has it


class _RunsCode:
    """Unpickling this calls os.system: what a malicious release file would do."""

    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_vocabulary_pickle_round_trips_builtin_containers(tmp_path):
    vocab = [[[1, 2, 3]], [[4, 5]], {0: "<end>", 1: "a", 2: "bird"}, {"<end>": 0, "a": 1, "bird": 2}]
    path = tmp_path / "captions.pickle"
    path.write_bytes(pickle.dumps(vocab, protocol=2))
    assert torch_files.load_plain_pickle(path) == vocab
    path.write_bytes(pickle.dumps({"s": {1, 2}, "f": frozenset({3})}, protocol=2))
    assert torch_files.load_plain_pickle(path) == {"s": {1, 2}, "f": frozenset({3})}


@pytest.mark.parametrize("payload", [_RunsCode(), np.zeros(2)])
def test_vocabulary_pickle_that_names_a_global_is_refused_before_it_runs(tmp_path, payload):
    path = tmp_path / "evil.pickle"
    path.write_bytes(pickle.dumps([{"a": 1}, payload], protocol=2))
    with pytest.raises(ImportFileError, match=r"evil\.pickle: unsafe or invalid pickle: refuses global") as e:
        torch_files.load_plain_pickle(path)
    assert "\n" not in str(e.value)


def test_garbage_and_missing_pickles_are_one_line_errors(tmp_path):
    (tmp_path / "junk.pickle").write_bytes(b"\x80\x02not really")
    with pytest.raises(ImportFileError, match="junk.pickle"):
        torch_files.load_plain_pickle(tmp_path / "junk.pickle")
    with pytest.raises(ImportFileError, match="no such file"):
        torch_files.load_plain_pickle(tmp_path / "absent.pickle")


def test_checkpoint_reads_tensors_and_refuses_code(tmp_path):
    good = tmp_path / "state_epoch_1.pth"
    torch.save({"model": {"netG": {"module.fc.weight": torch.arange(6.0).reshape(2, 3)}}, "epoch": 1}, good)
    obj = torch_files.load_torch_file(good)
    sd = torch_files.state_dict_from(obj, good, "model", "netG")
    np.testing.assert_array_equal(sd["fc.weight"], np.arange(6.0).reshape(2, 3))  # DataParallel prefix gone
    with pytest.raises(ImportFileError, match=r"no 'netD' at model \(found: netG\)"):
        torch_files.state_dict_from(obj, good, "model", "netD")
    evil = tmp_path / "evil.pth"
    torch.save({"x": _RunsCode()}, evil)
    with pytest.raises(ImportFileError, match=r"evil\.pth: refused by torch.load\(weights_only=True\)") as e:
        torch_files.load_torch_file(evil)
    assert "\n" not in str(e.value)
    (tmp_path / "cut.pth").write_bytes(good.read_bytes()[:100])
    with pytest.raises(ImportFileError, match="cut.pth: not a readable PyTorch file"):
        torch_files.load_torch_file(tmp_path / "cut.pth")


def test_state_dict_check_names_the_first_differences():
    expected = {f"w{i}": (2, 2) for i in range(8)}
    got = {f"w{i}": np.zeros((2, 2)) for i in range(1, 8)} | {"w3": np.zeros((3, 2)), "extra": np.zeros(1)}
    with pytest.raises(ImportFileError) as e:
        torch_files.check_state_dict(expected, got, "netG")
    assert str(e.value) == ("netG: 3 differences from the expected layout: missing w0; unexpected extra; "
                            "w3 has shape (3, 2), expected (2, 2)")
    torch_files.check_state_dict(expected, {k: np.zeros(s) for k, s in expected.items()}, "netG")


def test_without_torch_the_import_command_says_how_to_install_it(tmp_path, monkeypatch, capsys):
    from jaxgan.cli import run_command

    monkeypatch.setitem(sys.modules, "torch", None)  # what `import torch` sees where torch is not installed
    (tmp_path / "state_epoch_1.pth").write_bytes(b"")
    assert run_command("import", ["dfgan", "--checkpoint", str(tmp_path / "state_epoch_1.pth"),
                                  "--text-encoder", "shapes", "--workdir", str(tmp_path / "w")]) == 2
    # (transformers may print its own note when it first finds torch missing; jaxgan's is one line.)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: importing PyTorch checkpoints needs torch: pip install 'jaxgan[torch]'"
    assert not (tmp_path / "w").exists()
