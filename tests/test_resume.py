"""`fit --resume auto`: rerun the same command after a crash; a damaged newest checkpoint is skipped, not trusted."""

from __future__ import annotations

import torch

from lit_imgcls.io import load_checkpoint

from conftest import quick_args, run_cli

COMMON = dict(num_examples=1000, lr=0.1, lr_factor=0.9, lr_factor_epoch=0.5, seed=2)


def test_resume_auto_skips_a_truncated_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    full = run_cli("fit", *quick_args(tmp_path / "a", num_epochs=3, **COMMON), cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    # the same command with --resume auto: nothing saved yet, so it starts from scratch; 2 of 3 epochs
    first = run_cli("fit", *quick_args(tmp_path / "b", num_epochs=2, resume="auto", **COMMON), cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    # a crash while epoch 2's file was written (as a disk filling up would leave it)
    ckpt2 = tmp_path / "b/model/mnist-0002.ckpt"
    ckpt2.write_bytes(ckpt2.read_bytes()[: ckpt2.stat().st_size // 3])
    # without its checksum file (a copy that lost it), the cut is still found: the zip's directory is missing
    (tmp_path / "b/model/mnist-0002.ckpt.sha256").unlink()
    again = run_cli("fit", *quick_args(tmp_path / "b", num_epochs=3, resume="auto", **COMMON), cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    warning = [line for line in again.stderr.splitlines() if line.startswith("lit-imgcls: warning:")]
    assert len(warning) == 1 and "mnist-0002.ckpt is damaged or not a lit-imgcls checkpoint" in warning[0] and "trying the one before" in warning[0]
    # resumed from epoch 1, so epochs 2 and 3 were trained again: the same weights as the uninterrupted run
    a = load_checkpoint(tmp_path / "a/model/mnist-0003.ckpt")
    b = load_checkpoint(tmp_path / "b/model/mnist-0003.ckpt")
    assert a["global_step"] == b["global_step"] == 3 * (1000 // 64)
    for k in a["state_dict"]:
        torch.testing.assert_close(a["state_dict"][k], b["state_dict"][k], rtol=1e-5, atol=1e-6, msg=k)
    load_checkpoint(ckpt2)  # rewritten whole


def test_resume_auto_needs_a_prefix_and_excludes_load_epoch(tmp_path):
    args = [a for a in quick_args(tmp_path) if a]
    i = args.index("--model-prefix")
    no_prefix = args[:i] + args[i + 2:]
    res = run_cli("fit", *no_prefix, "--resume", "auto", cwd=tmp_path)
    assert res.returncode == 2 and "resume needs model_prefix" in res.stderr
    res = run_cli("fit", *quick_args(tmp_path, resume="auto", load_epoch=1), cwd=tmp_path)
    assert res.returncode == 2 and "either resume auto or load_epoch" in res.stderr
    res = run_cli("fit", *quick_args(tmp_path, resume="newest"), cwd=tmp_path)
    assert res.returncode == 2 and "resume" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_checksum_file_catches_a_flipped_byte_and_a_cut(tmp_path):
    import pytest

    from lit_imgcls.errors import UsageError
    from lit_imgcls.io import save_checkpoint

    path = tmp_path / "m-0001.ckpt"
    save_checkpoint({"state_dict": {"w": torch.arange(10000, dtype=torch.float32)}, "epoch": 0}, path)
    assert (tmp_path / "m-0001.ckpt.sha256").read_text().endswith("  m-0001.ckpt\n")
    good = path.read_bytes()
    assert load_checkpoint(path)["state_dict"]["w"][-1] == 9999
    # one bit in the middle of the tensor's bytes: the zip may still load, with a wrong weight
    bad = bytearray(good)
    bad[len(good) // 2] ^= 0x01
    path.write_bytes(bytes(bad))
    with pytest.raises(UsageError, match=r"m-0001.ckpt is damaged: its sha256 .* differs from m-0001.ckpt.sha256"):
        load_checkpoint(path)
    path.write_bytes(good[:-100])
    with pytest.raises(UsageError, match="is damaged"):
        load_checkpoint(path)
    # rewriting removes the old checksum before the new file takes the name, so a crash in between leaves a
    # checkpoint without a checksum (trusted after the zip check), never a good one with a stale checksum
    save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, path)
    assert load_checkpoint(path)["state_dict"]["w"].shape == (3,)
