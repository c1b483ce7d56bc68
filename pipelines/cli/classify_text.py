"""``journeylake classify-text``: score a CSV file of texts with the champion text model.

Every row of ``--in`` keeps its columns, as text, and gains ``intent``, ``intent_confidence`` and
``sentiment`` (ml/text.py); the result goes to ``--out``. For analysts, and for checking the model
on text the project has never seen. A file that cannot be read as CSV in UTF-8, lacks the text
column or holds no rows is refused in one line naming it; so is a home with no champion text
model yet (``journeylake train --only text`` makes one).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.config import add_config_arguments, config_from_args
from pipelines.errors import InputError

if TYPE_CHECKING:
    import pandas as pd

CHUNK_ROWS = 5_000  # rows scored at a time (the progress bar's step)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--in", dest="in_path", required=True, metavar="FILE.csv", help="a CSV file (UTF-8) with a header row"
    )
    parser.add_argument(
        "--text-column", default="text", metavar="NAME", help="the column holding the texts (default: text)"
    )
    parser.add_argument(
        "--out", required=True, metavar="FILE.csv", help="where to write the rows with their scores"
    )
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from ml import registry
    from ml.text import FAMILY, OUTPUT_COLUMNS, TARGET, load_text_champion

    cfg = config_from_args(args)
    source, out = Path(args.in_path), Path(args.out)
    frame = read_texts(source, args.text_column, OUTPUT_COLUMNS)
    if out.is_dir():
        raise InputError(f"--out {out}: is a folder; name the CSV file to write")
    model, version = load_text_champion(cfg)
    started = time.perf_counter()
    scored = _score_with_progress(model.predict, frame[args.text_column].tolist())
    seconds = time.perf_counter() - started
    result = frame.join(scored.set_axis(frame.index))
    write_csv(result, out)
    unrecognised = int((result["intent"] == model.unrecognised_label).sum())
    name = registry.model_name(cfg, FAMILY, TARGET)
    print(f"scored {len(result):,} rows of {source} with {name} v{version} in {seconds:.1f} s -> {out}")
    print(
        f"  {len(result) - unrecognised:,} with an intent, {unrecognised:,} {model.unrecognised_label} "
        f"(confidence below ml.text.min_confidence {model.min_confidence})"
    )
    return 0


def read_texts(path: Path, column: str, reserved: tuple[str, ...] = ()) -> pd.DataFrame:
    """The CSV file at ``path`` as a frame of strings (empty cells stay empty strings, "NA" stays
    "NA"), checked to hold rows and ``column``, and none of the ``reserved`` output columns."""
    import pandas as pd

    where = f"--in {path}"
    if not path.exists():
        raise InputError(f"{where}: no such file")
    if not path.is_file():
        raise InputError(f"{where}: not a file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"{where}: cannot be read ({exc.strerror or exc})") from None
    if not raw.strip():
        raise InputError(
            f"{where}: the file is empty; expected a CSV with a header row and a {column!r} column"
        )
    try:
        text = raw.decode("utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is not part of the header
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{where}: not UTF-8 text (byte {exc.start} is 0x{raw[exc.start]:02x}); save it as CSV in UTF-8"
        ) from None
    if "\x00" in text:
        raise InputError(f"{where}: holds NUL characters, not a CSV text file")
    try:
        with warnings.catch_warnings():
            # a row longer than the header: pandas would take its first cells for an index and
            # shift the rest under the wrong columns (index_col=False), or drop cells (a warning)
            warnings.simplefilter("error", pd.errors.ParserWarning)
            frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, index_col=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, pd.errors.ParserWarning) as exc:
        if isinstance(exc, pd.errors.ParserWarning):
            reason = "a row has more cells than the header has columns"
        else:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{where}: not a readable CSV file ({reason})") from None
    if column not in frame.columns:
        columns = ", ".join(repr(str(c)) for c in frame.columns[:20])
        raise InputError(
            f"{where}: no column {column!r} (its columns: {columns}); "
            "name the texts' column with --text-column"
        )
    taken = [c for c in reserved if c in frame.columns]
    if taken:
        raise InputError(
            f"{where}: already has the column(s) {', '.join(taken)} that the scores are written to; "
            "rename or drop them first"
        )
    if frame.empty:
        raise InputError(f"{where}: a header but no rows to score")
    return frame


def write_csv(frame: pd.DataFrame, out: Path) -> None:
    """Write ``frame`` to ``out`` whole or not at all (a temporary file renamed into place)."""
    partial = out.with_name(f".{out.name}.partial")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(partial, index=False, encoding="utf-8")
        os.replace(partial, out)
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
        raise InputError(f"--out {out}: cannot be written ({exc.strerror or exc})") from None


def _score_with_progress(predict: Callable[[list[str]], pd.DataFrame], texts: list[str]) -> pd.DataFrame:
    """``predict`` over ``texts`` in chunks, with a progress bar on a terminal."""
    import pandas as pd
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(file=sys.stdout)
    parts = []
    with Progress(
        TextColumn("classifying texts"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal or len(texts) <= CHUNK_ROWS,
    ) as progress:
        task = progress.add_task("rows", total=len(texts))
        for start in range(0, len(texts), CHUNK_ROWS):
            parts.append(predict(texts[start : start + CHUNK_ROWS]))
            progress.update(task, completed=min(start + CHUNK_ROWS, len(texts)))
    return pd.concat(parts, ignore_index=True)
