"""Key-value logger with several output formats, following Stable-Baselines3's ``logger`` module.

A :class:`Logger` accumulates values with :meth:`Logger.record` / :meth:`Logger.record_mean` and
writes them all at once with :meth:`Logger.dump`. Each output format (human-readable table on
stdout or in ``log.txt``, ``progress.csv``, ``progress.json``, TensorBoard event files) receives the
same values; a key can be kept out of some formats with ``exclude`` (a string or a tuple of format
names: ``"stdout"``, ``"log"``, ``"json"``, ``"csv"``, ``"tensorboard"``).

TensorBoard files are written with ``tensorboardX`` (the ``extra`` extra), so no PyTorch is needed.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import sys
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import numpy as np

DEBUG = 10
INFO = 20
WARN = 30
ERROR = 40
DISABLED = 50

#: Formats understood by :func:`make_output_format` and :func:`configure`.
KNOWN_FORMATS = ("stdout", "log", "json", "csv", "tensorboard")


class Video:
    """A video to log (TensorBoard only).

    :param frames: frames as an array of shape ``(N, T, C, H, W)`` (uint8 in [0, 255] or float in [0, 1])
    :param fps: frames per second
    """

    def __init__(self, frames: Any, fps: float):
        self.frames = frames
        self.fps = fps


class Figure:
    """A matplotlib figure to log (TensorBoard only).

    :param figure: the ``matplotlib.figure.Figure``
    :param close: close the figure once it has been logged
    """

    def __init__(self, figure: Any, close: bool):
        self.figure = figure
        self.close = close


class Image:
    """An image to log (TensorBoard only).

    :param image: image array
    :param dataformats: layout of ``image``: ``"CHW"``, ``"HWC"``, ``"HW"``, ``"WH"``, ...
    """

    def __init__(self, image: Any, dataformats: str):
        self.image = image
        self.dataformats = dataformats


class HParam:
    """Hyperparameters and the metrics to show next to them in TensorBoard's HPARAMS tab.

    :param hparam_dict: hyperparameter name -> value (bool, str, int or float)
    :param metric_dict: metric tags (already logged as scalars, or logged later) -> initial value;
        must not be empty
    """

    def __init__(
        self, hparam_dict: Mapping[str, bool | str | float | None], metric_dict: Mapping[str, float]
    ):
        if not metric_dict:
            raise ValueError("`metric_dict` must not be empty to display hyperparameters in TensorBoard.")
        self.hparam_dict = dict(hparam_dict)
        self.metric_dict = dict(metric_dict)


class FormatUnsupportedError(NotImplementedError):
    """Raised when an output format cannot write a value of a given type (e.g. a video to CSV)."""

    def __init__(self, unsupported_formats: Sequence[str], value_description: str):
        if len(unsupported_formats) > 1:
            format_str = f"formats {', '.join(unsupported_formats)} are"
        else:
            format_str = f"format {unsupported_formats[0]} is"
        super().__init__(
            f"The {format_str} not supported for the {value_description} value logged.\n"
            "You can exclude formats via the `exclude` parameter of the logger's `record` function."
        )


_SPECIAL_TYPES: dict[type, str] = {Video: "video", Figure: "figure", Image: "image", HParam: "hparam"}


def _check_plain(value: Any, format_name: str) -> None:
    for cls, name in _SPECIAL_TYPES.items():
        if isinstance(value, cls):
            raise FormatUnsupportedError([format_name], name)


def _is_excluded(excluded: str | tuple[str, ...] | None, *format_names: str) -> bool:
    if excluded is None:
        return False
    if isinstance(excluded, str):
        excluded = (excluded,)
    return any(name in excluded for name in format_names)


def filter_excluded_keys(
    key_values: dict[str, Any], key_excluded: dict[str, tuple[str, ...]], _format: str
) -> dict[str, Any]:
    """Return the entries of ``key_values`` that are not excluded from the format ``_format``."""
    return {
        key: value for key, value in key_values.items() if not _is_excluded(key_excluded.get(key), _format)
    }


def _to_python(value: Any) -> Any:
    """Turn numpy scalars / 0-d arrays into Python numbers (for JSON and CSV)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value.tolist()
    return value


class KVWriter:
    """Base class of the formats that write key-value dicts."""

    def write(
        self,
        key_values: dict[str, Any],
        key_excluded: dict[str, tuple[str, ...]],
        step: int = 0,
    ) -> None:
        """Write one dump of values.

        :param key_values: key -> value
        :param key_excluded: key -> formats it is excluded from
        :param step: timestep of the dump
        """
        raise NotImplementedError

    def close(self) -> None:
        """Close the underlying file(s)."""
        raise NotImplementedError


class SeqWriter:
    """Base class of the formats that write sequences of strings (log messages)."""

    def write_sequence(self, sequence: list[str]) -> None:
        """Write the strings of ``sequence`` on one line, separated by spaces."""
        raise NotImplementedError


class HumanOutputFormat(KVWriter, SeqWriter):
    """Human-readable table (stdout or ``log.txt``).

    Keys are sorted; keys sharing a ``prefix/`` are grouped under a ``prefix/`` header line. Keys
    and values longer than ``max_length`` characters are truncated (ending with ``...``).

    :param filename_or_file: a path (opened for writing) or a file-like object with ``write``
    :param max_length: longest key or value printed before truncation
    """

    def __init__(self, filename_or_file: str | os.PathLike[str] | TextIO, max_length: int = 36):
        self.max_length = max_length
        if isinstance(filename_or_file, (str, os.PathLike)):
            self.file: TextIO = open(filename_or_file, "w")  # noqa: SIM115
            self.own_file = True
        elif hasattr(filename_or_file, "write"):
            self.file = filename_or_file
            self.own_file = False
        else:
            raise ValueError(f"Expected a file path or a writable file object, got {filename_or_file!r}")

    def _truncate(self, string: str) -> str:
        if len(string) > self.max_length:
            return string[: self.max_length - 3] + "..."
        return string

    @staticmethod
    def _format_value(value: Any) -> str:
        if isinstance(value, (float, np.floating)):
            # Same width and precision as SB3 (left-aligned, 3 significant digits).
            return f"{float(value):<8.3g}"
        return str(value)

    def write(
        self,
        key_values: dict[str, Any],
        key_excluded: dict[str, tuple[str, ...]],
        step: int = 0,
    ) -> None:
        rows: dict[tuple[str, str], str] = {}
        shown_tags: set[str] = set()
        for key, value in sorted(key_values.items()):
            if _is_excluded(key_excluded.get(key), "stdout", "log"):
                continue
            _check_plain(value, "stdout")
            slash = key.find("/")
            if slash > 0:
                tag = key[: slash + 1]
                if tag not in shown_tags:
                    shown_tags.add(tag)
                    rows[(tag, self._truncate(tag))] = ""
                name = "   " + key[slash + 1 :]
            else:
                tag = ""
                name = key
            truncated = (tag, self._truncate(name))
            if truncated in rows:
                raise ValueError(
                    f"Key '{key}' truncated to '{truncated[1].strip()}' collides with another key. "
                    "Consider increasing `max_length`."
                )
            rows[truncated] = self._truncate(self._format_value(value))

        if not rows:
            warnings.warn("Tried to write empty key-value dict", stacklevel=2)
            return

        key_width = max(len(name) for _, name in rows)
        val_width = max(len(val) for val in rows.values())
        dashes = "-" * (key_width + val_width + 7)
        lines = [dashes]
        for (_, name), val in rows.items():
            lines.append(f"| {name}{' ' * (key_width - len(name))} | {val}{' ' * (val_width - len(val))} |")
        lines.append(dashes)
        self.file.write("\n".join(lines) + "\n")
        self.file.flush()

    def write_sequence(self, sequence: list[str]) -> None:
        self.file.write(" ".join(str(item) for item in sequence) + "\n")
        self.file.flush()

    def close(self) -> None:
        if self.own_file:
            self.file.close()


class JSONOutputFormat(KVWriter):
    """One JSON object per line (``progress.json``).

    :param filename: path of the file to write
    """

    def __init__(self, filename: str | os.PathLike[str]):
        self.file = open(filename, "w")  # noqa: SIM115

    def write(
        self,
        key_values: dict[str, Any],
        key_excluded: dict[str, tuple[str, ...]],
        step: int = 0,
    ) -> None:
        row = {}
        for key, value in key_values.items():
            if _is_excluded(key_excluded.get(key), "json"):
                continue
            _check_plain(value, "json")
            row[key] = _to_python(value)
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class CSVOutputFormat(KVWriter):
    """Comma-separated values with a header line (``progress.csv``).

    When a key appears for the first time after rows were written, the header is extended and the
    earlier rows get an empty cell for it (the file is rewritten).

    :param filename: path of the file to write
    """

    def __init__(self, filename: str | os.PathLike[str]):
        self.filename = os.fspath(filename)
        self.file = open(self.filename, "w+", newline="")  # noqa: SIM115
        self.keys: list[str] = []
        self.separator = ","
        self.quotechar = '"'

    def _cell(self, value: Any) -> str:
        value = _to_python(value)
        if value is None:
            return ""
        if isinstance(value, str):
            # Quote strings and double their quote characters, as the csv module would.
            return self.quotechar + value.replace(self.quotechar, self.quotechar * 2) + self.quotechar
        return str(value)

    def write(
        self,
        key_values: dict[str, Any],
        key_excluded: dict[str, tuple[str, ...]],
        step: int = 0,
    ) -> None:
        key_values = filter_excluded_keys(key_values, key_excluded, "csv")
        for value in key_values.values():
            _check_plain(value, "csv")
        new_keys = [key for key in key_values if key not in self.keys]
        if new_keys:
            self.keys.extend(new_keys)
            self.file.seek(0)
            old_lines = self.file.readlines()
            self.file.seek(0)
            self.file.truncate()
            self.file.write(self.separator.join(self.keys) + "\n")
            # Earlier rows: drop their old header, pad them with empty cells for the new keys.
            for line in old_lines[1:]:
                self.file.write(line.rstrip("\n") + self.separator * len(new_keys) + "\n")
        self.file.write(self.separator.join(self._cell(key_values.get(key)) for key in self.keys) + "\n")
        self.file.flush()

    def close(self) -> None:
        self.file.close()


class TensorBoardOutputFormat(KVWriter):
    """TensorBoard event files, written with ``tensorboardX`` (no PyTorch needed).

    Numbers become scalars, strings become text, ``Video`` / ``Figure`` / ``Image`` / ``HParam``
    are written with the matching tensorboardX call, and arrays with more than one element become
    histograms.

    :param folder: directory for the event files
    """

    def __init__(self, folder: str | os.PathLike[str]):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "The 'tensorboard' log format needs the `tensorboardX` package: "
                "pip install 'mlx-baselines3[extra]' (or pip install tensorboardX)."
            ) from exc
        self.writer = SummaryWriter(logdir=os.fspath(folder))

    def write(
        self,
        key_values: dict[str, Any],
        key_excluded: dict[str, tuple[str, ...]],
        step: int = 0,
    ) -> None:
        for key, value in sorted(key_values.items()):
            if _is_excluded(key_excluded.get(key), "tensorboard"):
                continue
            if isinstance(value, Video):
                self.writer.add_video(key, np.asarray(value.frames), step, fps=value.fps)
            elif isinstance(value, Figure):
                self.writer.add_figure(key, value.figure, step, close=value.close)
            elif isinstance(value, Image):
                self.writer.add_image(key, np.asarray(value.image), step, dataformats=value.dataformats)
            elif isinstance(value, HParam):
                self._write_hparams(value)
            elif isinstance(value, str):
                self.writer.add_text(key, value, step)
            elif isinstance(value, (bool, np.bool_)):
                self.writer.add_scalar(key, float(value), step)
            elif isinstance(value, (int, float, np.integer, np.floating)):
                self.writer.add_scalar(key, float(value), step)
            elif isinstance(value, np.ndarray):
                if value.size == 1:
                    self.writer.add_scalar(key, float(value.reshape(())), step)
                elif value.size > 1:
                    self.writer.add_histogram(key, value, step)
            # None and other objects have no TensorBoard representation: skipped.
        self.writer.flush()

    def _write_hparams(self, value: HParam) -> None:
        from tensorboardX.summary import hparams

        experiment, session_start, session_end = hparams(value.hparam_dict, value.metric_dict)
        file_writer = self.writer._get_file_writer()
        file_writer.add_summary(experiment)
        file_writer.add_summary(session_start)
        file_writer.add_summary(session_end)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None  # type: ignore[assignment]


def make_output_format(_format: str, log_dir: str | os.PathLike[str], log_suffix: str = "") -> KVWriter:
    """Build one output format.

    :param _format: ``"stdout"``, ``"log"``, ``"json"``, ``"csv"`` or ``"tensorboard"``
    :param log_dir: directory for the files (created if missing)
    :param log_suffix: appended to the file names (``log{suffix}.txt``, ``progress{suffix}.csv``, ...)
    :return: the output format
    """
    log_dir = os.fspath(log_dir)
    os.makedirs(log_dir, exist_ok=True)
    if _format == "stdout":
        return HumanOutputFormat(sys.stdout)
    if _format == "log":
        return HumanOutputFormat(os.path.join(log_dir, f"log{log_suffix}.txt"))
    if _format == "json":
        return JSONOutputFormat(os.path.join(log_dir, f"progress{log_suffix}.json"))
    if _format == "csv":
        return CSVOutputFormat(os.path.join(log_dir, f"progress{log_suffix}.csv"))
    if _format == "tensorboard":
        return TensorBoardOutputFormat(log_dir)
    raise ValueError(f"Unknown format specified: {_format!r}. Known formats: {', '.join(KNOWN_FORMATS)}")


def _normalize_value(value: Any) -> Any:
    """Convert an ``mx.array`` (or a 0-d numpy array) into something every format can write."""
    if type(value).__module__.startswith("mlx"):
        array = np.array(value)
        return array.item() if array.size == 1 else array
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return value


def _normalize_exclude(exclude: str | Sequence[str] | None) -> tuple[str, ...]:
    if exclude is None:
        return ()
    if isinstance(exclude, str):
        return (exclude,)
    return tuple(exclude)


class Logger:
    """Collects values and writes them to its output formats on :meth:`dump`.

    :param folder: directory of the log files (returned by :meth:`get_dir`), or None
    :param output_formats: where to write
    """

    def __init__(self, folder: str | None, output_formats: list[KVWriter]):
        self.name_to_value: dict[str, Any] = defaultdict(float)
        self.name_to_count: dict[str, int] = defaultdict(int)
        self.name_to_excluded: dict[str, tuple[str, ...]] = {}
        self.level = INFO
        self.dir = folder
        self.output_formats = output_formats

    def record(self, key: str, value: Any, exclude: str | Sequence[str] | None = None) -> None:
        """Set the value of ``key`` for the next dump (the last value recorded wins).

        :param key: name, ``prefix/name`` groups keys in the stdout table
        :param value: number, string, None, ``Video``/``Figure``/``Image``/``HParam``, numpy or MLX array
        :param exclude: format name(s) this key is not written to
        """
        self.name_to_value[key] = _normalize_value(value)
        self.name_to_excluded[key] = _normalize_exclude(exclude)

    def record_mean(self, key: str, value: Any, exclude: str | Sequence[str] | None = None) -> None:
        """Average ``value`` with the other values recorded for ``key`` since the last dump.

        :param key: name
        :param value: a number (None is ignored)
        :param exclude: format name(s) this key is not written to
        """
        if value is None:
            return
        value = float(_normalize_value(value))
        old_value, count = self.name_to_value[key], self.name_to_count[key]
        if old_value is None or count == 0:
            old_value = 0.0
        self.name_to_value[key] = old_value * count / (count + 1) + value / (count + 1)
        self.name_to_count[key] = count + 1
        self.name_to_excluded[key] = _normalize_exclude(exclude)

    def dump(self, step: int = 0) -> None:
        """Write every recorded value to all output formats, then forget them.

        :param step: timestep attached to this dump (used by TensorBoard)
        """
        if self.level == DISABLED:
            return
        for output_format in self.output_formats:
            output_format.write(dict(self.name_to_value), dict(self.name_to_excluded), step)
        self.name_to_value.clear()
        self.name_to_count.clear()
        self.name_to_excluded.clear()

    def log(self, *args: Any, level: int = INFO) -> None:
        """Write ``args`` (joined by spaces) to the text formats if ``level`` is at least the logger's level."""
        if self.level <= level:
            self._do_log(args)

    def debug(self, *args: Any) -> None:
        """Log at DEBUG level."""
        self.log(*args, level=DEBUG)

    def info(self, *args: Any) -> None:
        """Log at INFO level."""
        self.log(*args, level=INFO)

    def warn(self, *args: Any) -> None:
        """Log at WARN level."""
        self.log(*args, level=WARN)

    def error(self, *args: Any) -> None:
        """Log at ERROR level."""
        self.log(*args, level=ERROR)

    def set_level(self, level: int) -> None:
        """Only messages at ``level`` or above are logged (DEBUG=10, INFO=20, WARN=30, ERROR=40, DISABLED=50)."""
        self.level = level

    def get_dir(self) -> str | None:
        """The directory the log files are written to (None if there is none)."""
        return self.dir

    def close(self) -> None:
        """Close every output format."""
        for output_format in self.output_formats:
            output_format.close()

    def _do_log(self, args: Sequence[Any]) -> None:
        for output_format in self.output_formats:
            if isinstance(output_format, SeqWriter):
                output_format.write_sequence([str(arg) for arg in args])


def configure(
    folder: str | os.PathLike[str] | None = None, format_strings: list[str] | None = None
) -> Logger:
    """Create a :class:`Logger`.

    :param folder: log directory; defaults to the ``SB3_LOGDIR`` environment variable, else a new
        ``SB3-<date>`` directory in the system temp directory
    :param format_strings: output formats among ``"stdout"``, ``"log"``, ``"json"``, ``"csv"``,
        ``"tensorboard"``; defaults to the comma-separated ``SB3_LOG_FORMAT`` environment variable,
        else ``stdout,log,csv``
    :return: the logger
    """
    if folder is None:
        folder = os.getenv("SB3_LOGDIR")
    if folder is None:
        stamp = datetime.datetime.now().strftime("SB3-%Y-%m-%d-%H-%M-%S-%f")
        folder = os.path.join(tempfile.gettempdir(), stamp)
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)

    if format_strings is None:
        format_strings = os.getenv("SB3_LOG_FORMAT", "stdout,log,csv").split(",")
    format_strings = [fmt.strip() for fmt in format_strings if fmt and fmt.strip()]
    output_formats = [make_output_format(fmt, folder) for fmt in format_strings]
    logger = Logger(folder=folder, output_formats=output_formats)
    if format_strings and format_strings != ["stdout"]:
        logger.log(f"Logging to {folder}")
    return logger


def _parse_cell(cell: str) -> Any:
    if cell == "":
        return np.nan
    try:
        return float(cell)
    except ValueError:
        return cell


def _columns_to_arrays(columns: dict[str, list[Any]]) -> dict[str, np.ndarray]:
    result: dict[str, np.ndarray] = {}
    for key, values in columns.items():
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            result[key] = np.asarray(values, dtype=np.float64)
        else:
            result[key] = np.asarray(values, dtype=object)
    return result


def read_json(filename: str | os.PathLike[str]) -> Any:
    """Read a ``progress.json`` file.

    :return: a ``pandas.DataFrame`` when pandas is installed, else a dict column -> numpy array
        (missing values are NaN)
    """
    try:
        import pandas
    except ImportError:
        pandas = None
    if pandas is not None:
        return pandas.read_json(filename, lines=True)
    rows = []
    with open(filename) as file:
        for line in file:
            if line.strip():
                rows.append(json.loads(line))
    keys: list[str] = []
    for row in rows:
        keys.extend(k for k in row if k not in keys)
    columns = {key: [np.nan if row.get(key) is None else row[key] for row in rows] for key in keys}
    return _columns_to_arrays(columns)


def read_csv(filename: str | os.PathLike[str]) -> Any:
    """Read a ``progress.csv`` file (lines starting with ``#`` are ignored).

    :return: a ``pandas.DataFrame`` when pandas is installed, else a dict column -> numpy array
        (empty cells are NaN)
    """
    try:
        import pandas
    except ImportError:
        pandas = None
    if pandas is not None:
        return pandas.read_csv(filename, index_col=None, comment="#")
    with open(filename, newline="") as file:
        reader = csv.reader(line for line in file if not line.startswith("#"))
        header = next(reader, [])
        columns: dict[str, list[Any]] = {key: [] for key in header}
        for row in reader:
            for i, key in enumerate(header):
                columns[key].append(_parse_cell(row[i]) if i < len(row) else np.nan)
    return _columns_to_arrays(columns)


__all__ = [
    "DEBUG",
    "DISABLED",
    "ERROR",
    "INFO",
    "WARN",
    "CSVOutputFormat",
    "FormatUnsupportedError",
    "Figure",
    "HParam",
    "HumanOutputFormat",
    "Image",
    "JSONOutputFormat",
    "KVWriter",
    "Logger",
    "SeqWriter",
    "TensorBoardOutputFormat",
    "Video",
    "configure",
    "filter_excluded_keys",
    "make_output_format",
    "read_csv",
    "read_json",
]
