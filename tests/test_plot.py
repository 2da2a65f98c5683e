"""`graphc plot`: several training runs in one figure, from logs or checkpoints;
every bad file a clean error naming it (and the line of a log)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

import graphc
from graphc.checkpoint import EpochRecord, save_checkpoint
from graphc.cli import main
from graphc.commands.plot import read_history, read_log
from graphc.train import log_csv

ROOT = Path(__file__).resolve().parent.parent
HISTORY = [
    EpochRecord(epoch=1, iteration=600, loss=0.7352, train_acc=0.904383, test_acc=0.9102, seconds=1.5),
    EpochRecord(epoch=2, iteration=1200, loss=0.298172, train_acc=0.920583, test_acc=0.9231, seconds=3.0),
]


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_a_log_reads_back_what_train_wrote(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text(log_csv(HISTORY))
    assert read_log(str(path)) == HISTORY


def test_a_checkpoint_gives_its_history(tmp_path):
    path = tmp_path / "w.npz"
    save_checkpoint(path, graphc.compile_file(ROOT / "models" / "two_layer_net.graph"), history=HISTORY)
    assert read_history(str(path)) == HISTORY


def test_plot_draws_logs_and_checkpoints_in_one_figure(tmp_path, capsys):
    (tmp_path / "plain.csv").write_text(log_csv(HISTORY))
    (tmp_path / "bn.csv").write_text(log_csv(HISTORY[:1]))
    save_checkpoint(tmp_path / "w.npz", graphc.compile_file(ROOT / "models" / "apple.graph"), history=HISTORY)
    out = tmp_path / "cmp.png"
    runs = [str(tmp_path / name) for name in ("plain.csv", "bn.csv", "w.npz")]
    assert main(["plot", *runs, "-o", str(out), "--title", "BatchNorm or not"]) == 0
    assert capsys.readouterr().out == f"wrote {out} (3 runs)\n"
    assert png_size(out) == (1000, 400)


def test_a_label_for_each_run_or_none(tmp_path, capsys):
    (tmp_path / "a.csv").write_text(log_csv(HISTORY))
    out = tmp_path / "cmp.png"
    assert main(["plot", str(tmp_path / "a.csv"), "-o", str(out), "--label", "x", "--label", "y"]) == 2
    assert capsys.readouterr().err == (
        "graphc plot: error[E505]: --label given 2 times for 1 runs\nhint: give one --label per run, in order, or none\n"
    )
    assert not out.exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "{p}:1: error[E612]: not a training log: its first line must be "
         "`epoch,iteration,loss,train_acc,test_acc,seconds`\nhint: write one with `graphc train FILE --log LOG.csv`\n"),
        ("epoch,iteration,loss,train_acc,test_acc,seconds\n", "{p}: error[E612]: the log has no epochs\n"),
        ("epoch,iteration,loss,train_acc,test_acc,seconds\n1,600,0.5,0.9,0.91\n",
         "{p}:2: error[E612]: 5 fields where a log row has 6\n"),
        ("epoch,iteration,loss,train_acc,test_acc,seconds\n1,600,0.5,0.9,0.91,1\n2,1e3,0.4,0.9,0.91,2\n",
         "{p}:3: error[E612]: `1e3` in column iteration is not a whole number\n"),
        ("epoch,iteration,loss,train_acc,test_acc,seconds\n1,600,low,0.9,0.91,1\n",
         "{p}:2: error[E612]: `low` in column loss is not a number\n"),
        ("epoch,iteration,loss,train_acc,test_acc,seconds\n1,600,0.5,90,0.91,1\n",
         "{p}:2: error[E612]: `90` in column train_acc is not an accuracy between 0 and 1\n"),
    ],
    ids=["empty", "no-epochs", "short-row", "not-whole", "not-a-number", "percent"],
)  # fmt: skip
def test_a_bad_log_is_named_with_its_line(tmp_path, capsys, text, message):
    path = tmp_path / "run.csv"
    path.write_text(text)
    out = tmp_path / "cmp.png"
    out.write_bytes(b"the previous figure")
    assert main(["plot", str(path), "-o", str(out)]) == 2
    assert capsys.readouterr().err == message.format(p=path)
    assert out.read_bytes() == b"the previous figure"  # left as it was


def test_missing_files_and_plain_weights_are_refused(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "none.csv"), "-o", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == (
        f"{tmp_path / 'none.csv'}: error[E601]: no such file\nhint: write a log with `graphc train FILE --log LOG.csv`\n"
    )
    plain = tmp_path / "plain.npz"
    np.savez(plain, W=np.zeros(2))
    assert main(["plot", str(plain), "-o", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == (
        f"{plain}: error[E612]: no training history in this file\nhint: plot a checkpoint written by `graphc train --save`\n"
    )


def test_a_diverged_run_is_plotted_as_it_went(tmp_path):
    path = tmp_path / "run.csv"
    path.write_text("epoch,iteration,loss,train_acc,test_acc,seconds\n1,600,nan,0.1,0.1,1\n")
    assert [r.epoch for r in read_log(str(path))] == [1]
    assert main(["plot", str(path), "-o", str(tmp_path / "x.png")]) == 0
