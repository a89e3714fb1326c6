"""Tests of mlx_baselines3.common.logger: every output format's content, exclusion, env vars."""

from __future__ import annotations

import io
import json
import os
import struct

import mlx.core as mx
import numpy as np
import pytest

from mlx_baselines3.common.logger import (
    DEBUG,
    DISABLED,
    INFO,
    WARN,
    CSVOutputFormat,
    Figure,
    FormatUnsupportedError,
    HParam,
    HumanOutputFormat,
    Image,
    JSONOutputFormat,
    Logger,
    TensorBoardOutputFormat,
    Video,
    configure,
    make_output_format,
    read_csv,
    read_json,
)


def read_tb_events(folder: str) -> list:
    """Parse every TFRecord event file in ``folder`` with tensorboardX's protobuf messages."""
    from tensorboardX.proto import event_pb2

    events = []
    for name in sorted(os.listdir(folder)):
        if "tfevents" not in name:
            continue
        with open(os.path.join(folder, name), "rb") as file:
            data = file.read()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            offset += 12  # length + its crc
            event = event_pb2.Event()
            event.ParseFromString(data[offset : offset + length])
            events.append(event)
            offset += length + 4  # payload + its crc
    return events


def tb_scalars(folder: str) -> dict[str, list[tuple[int, float]]]:
    scalars: dict[str, list[tuple[int, float]]] = {}
    for event in read_tb_events(folder):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_human_output_table_layout():
    stream = io.StringIO()
    fmt = HumanOutputFormat(stream)
    fmt.write({"rollout/ep_rew_mean": 22.5, "time/fps": 1234, "a": "x", "rollout/ep_len_mean": 0.123456}, {})
    lines = stream.getvalue().splitlines()
    expected_rows = [
        ("a", "x"),
        ("rollout/", ""),
        ("   ep_len_mean", "0.123"),
        ("   ep_rew_mean", "22.5"),
        ("time/", ""),
        ("   fps", "1234"),
    ]
    assert lines[0] == lines[-1] and set(lines[0]) == {"-"}
    body = lines[1:-1]
    assert len(body) == len(expected_rows)
    for line, (key, val) in zip(body, expected_rows):
        assert line.startswith("| ") and line.endswith(" |")
        cells = [c.strip() for c in line[2:-2].split(" | ")]
        assert cells == [key.strip(), val]
        # Key column keeps its indentation.
        assert line[2:].startswith(key)
    # All lines have the same width as the dashes.
    assert all(len(line) == len(lines[0]) for line in lines)


def test_human_output_truncates_and_detects_collisions():
    stream = io.StringIO()
    fmt = HumanOutputFormat(stream, max_length=10)
    fmt.write({"abcdefghijklmnop": "0123456789abcdef"}, {})
    assert "abcdefg..." in stream.getvalue()
    assert "0123456..." in stream.getvalue()
    assert "abcdefghijk" not in stream.getvalue()
    with pytest.raises(ValueError, match="max_length"):
        fmt.write({"abcdefghijk1": 1, "abcdefghijk2": 2}, {})


def test_human_output_rejects_special_values_unless_excluded():
    stream = io.StringIO()
    fmt = HumanOutputFormat(stream)
    with pytest.raises(FormatUnsupportedError, match="video"):
        fmt.write({"v": Video(np.zeros((1, 2, 3, 4, 4)), fps=10)}, {})
    fmt.write({"v": Video(np.zeros((1, 2, 3, 4, 4)), fps=10), "x": 1.0}, {"v": ("stdout", "log")})
    keys = [
        line[2:].split(" | ")[0].strip() for line in stream.getvalue().splitlines() if line.startswith("|")
    ]
    assert keys == ["x"]


def test_logger_record_mean_exclude_and_mx_values(tmp_path):
    logger = configure(str(tmp_path), ["json", "csv"])
    logger.record("train/loss", mx.array(0.25))
    logger.record("train/np", np.float32(1.5))
    logger.record("only_csv", 7, exclude="json")
    logger.record("only_json", 8, exclude=("csv", "stdout"))
    for v in [1.0, 2.0, 6.0]:
        logger.record_mean("mean", v)
    logger.record_mean("mean", None)
    logger.record("none", None)
    logger.record("text", 'say "hi", ok')
    logger.dump(step=3)
    logger.close()

    row = json.loads((tmp_path / "progress.json").read_text().splitlines()[0])
    assert row == {
        "train/loss": 0.25,
        "train/np": 1.5,
        "only_json": 8,
        "mean": pytest.approx(3.0),
        "none": None,
        "text": 'say "hi", ok',
    }
    csv_data = read_csv(tmp_path / "progress.csv")
    assert float(np.asarray(csv_data["mean"])[0]) == pytest.approx(3.0)
    assert float(np.asarray(csv_data["only_csv"])[0]) == 7
    assert "only_json" not in list(csv_data.keys())
    assert list(np.asarray(csv_data["text"])) == ['say "hi", ok']
    assert np.isnan(float(np.asarray(csv_data["none"])[0]))


def test_dump_clears_values(tmp_path):
    logger = configure(str(tmp_path), ["json"])
    logger.record("a", 1)
    logger.dump()
    logger.record("b", 2)
    logger.dump()
    logger.close()
    rows = [json.loads(line) for line in (tmp_path / "progress.json").read_text().splitlines()]
    assert rows == [{"a": 1}, {"b": 2}]
    data = read_json(tmp_path / "progress.json")
    assert np.isnan(float(np.asarray(data["a"])[1]))


def test_csv_new_keys_rewrite_header(tmp_path):
    path = tmp_path / "progress.csv"
    fmt = CSVOutputFormat(str(path))
    fmt.write({"a": 1, "b": 2.5}, {})
    fmt.write({"a": 3, "c": "x"}, {})
    fmt.write({"b": 4}, {})
    fmt.close()
    assert path.read_text().splitlines() == ["a,b,c", "1,2.5,", '3,,"x"', ",4,"]


def test_csv_and_json_reject_special_values(tmp_path):
    for fmt in (CSVOutputFormat(str(tmp_path / "p.csv")), JSONOutputFormat(str(tmp_path / "p.json"))):
        with pytest.raises(FormatUnsupportedError):
            fmt.write({"img": Image(np.zeros((3, 4, 4)), "CHW")}, {})
        fmt.close()


def test_log_levels(tmp_path):
    stream = io.StringIO()
    logger = Logger(folder=None, output_formats=[HumanOutputFormat(stream)])
    logger.info("hello", 1)
    logger.debug("hidden")
    logger.set_level(WARN)
    logger.info("hidden too")
    logger.warn("warned")
    logger.error("error")
    logger.set_level(DEBUG)
    logger.debug("dbg")
    assert stream.getvalue().splitlines() == ["hello 1", "warned", "error", "dbg"]
    assert logger.get_dir() is None
    logger.set_level(DISABLED)
    logger.record("x", 1)
    logger.dump()
    assert "x" not in stream.getvalue()
    assert logger.level == DISABLED and INFO < DISABLED


def test_configure_env_vars(tmp_path, monkeypatch):
    folder = tmp_path / "envlog"
    monkeypatch.setenv("SB3_LOGDIR", str(folder))
    monkeypatch.setenv("SB3_LOG_FORMAT", "csv,json")
    logger = configure()
    assert logger.get_dir() == str(folder)
    assert sorted(type(f).__name__ for f in logger.output_formats) == ["CSVOutputFormat", "JSONOutputFormat"]
    logger.record("k", 1)
    logger.dump()
    logger.close()
    assert (folder / "progress.csv").read_text().splitlines() == ["k", "1"]


def test_configure_default_formats(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("SB3_LOG_FORMAT", raising=False)
    logger = configure(str(tmp_path))
    assert [type(f).__name__ for f in logger.output_formats] == [
        "HumanOutputFormat",
        "HumanOutputFormat",
        "CSVOutputFormat",
    ]
    logger.record("k", 2.0)
    logger.dump()
    logger.close()
    assert "Logging to" in capsys.readouterr().out
    assert "| k | 2" in (tmp_path / "log.txt").read_text()


def test_make_output_format_unknown(tmp_path):
    with pytest.raises(ValueError, match="Unknown format"):
        make_output_format("xml", str(tmp_path))


def test_tensorboard_scalars_text_and_hparams(tmp_path):
    logger = configure(str(tmp_path), ["tensorboard"])
    logger.record("train/loss", 0.5)
    logger.record("time/fps", np.int64(100))
    logger.record("note", "hello")
    logger.record("skipped", 1.0, exclude="tensorboard")
    logger.record("hist", np.arange(10.0))
    logger.dump(step=10)
    logger.record("train/loss", mx.array(0.25))
    logger.record("hparams", HParam({"lr": 0.1, "algo": "ppo"}, {"train/loss": 0.0}))
    logger.dump(step=20)
    logger.close()

    scalars = tb_scalars(str(tmp_path))
    assert scalars["train/loss"] == [(10, 0.5), (20, 0.25)]
    assert scalars["time/fps"] == [(10, 100.0)]
    assert "skipped" not in scalars
    tags = {value.tag for event in read_tb_events(str(tmp_path)) for value in event.summary.value}
    assert any(tag.startswith("note") for tag in tags)
    assert "hist" in tags
    assert "_hparams_/experiment" in tags


def test_tensorboard_figure_and_image(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    plt.plot([1, 2, 3])
    fmt = TensorBoardOutputFormat(str(tmp_path))
    fmt.write(
        {"fig": Figure(fig, close=True), "img": Image(np.zeros((3, 8, 8), dtype=np.uint8), "CHW")},
        {},
        step=1,
    )
    fmt.close()
    images = {
        value.tag
        for event in read_tb_events(str(tmp_path))
        for value in event.summary.value
        if value.HasField("image")
    }
    assert images == {"fig", "img"}


def test_hparam_requires_metrics():
    with pytest.raises(ValueError, match="metric_dict"):
        HParam({"lr": 0.1}, {})


def test_read_csv_and_json_without_pandas(tmp_path, monkeypatch):
    import sys

    logger = configure(str(tmp_path), ["csv", "json"])
    logger.record("a", 1.5)
    logger.record("s", "x,y")
    logger.dump()
    logger.record("b", 2)
    logger.dump()
    logger.close()
    monkeypatch.setitem(sys.modules, "pandas", None)  # makes `import pandas` fail
    for data in (read_csv(tmp_path / "progress.csv"), read_json(tmp_path / "progress.json")):
        assert isinstance(data, dict) and list(data) == ["a", "s", "b"]
        np.testing.assert_array_equal(data["a"], [1.5, np.nan])
        np.testing.assert_array_equal(data["b"], [np.nan, 2.0])
        assert data["s"][0] == "x,y"
