"""Documents -> tokens, in parallel: the source is cut into chunks that a worker process reads and
tokenizes by itself, and the token arrays come back in order.

A chunk is a 2 MiB line-aligned byte range of a .jsonl file, a row group of a .parquet file, a whole
.txt file (one document), 1,024 rows of a downloaded `datasets` dataset, 2 MiB of lines of a compressed
.jsonl.gz/.jsonl.zst file (decompressed by the main process as a stream: it cannot be cut by seeking), or
a batch of documents that the main process read (a stream can only be read in order). When workers read
their own chunks the main process only receives tokens, so it does not limit how many processes can work;
when it reads and sends every document itself, as build-nanogpt's fineweb.py does, it saturates at a few
workers (docs/benchmarks.md). Every chunk is bounded, and at most a few per process are in flight, so
memory stays bounded whatever the size of the input.
"""

from __future__ import annotations

import glob
import json
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

from .errors import DataError, report

# how sources are cut into chunks (a prepared directory records it: a rerun must cut the same way)
CHUNKING = {"jsonl_bytes": 2 * 1024 * 1024, "dataset_rows": 1024, "streamed_documents": 256}
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd"}
LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".txt", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".json.zst")


def token_dtype(vocab_size: int):
    return np.uint16 if vocab_size <= 2**16 else np.uint32


@dataclass(frozen=True)
class Chunk:
    """A unit of work: "jsonl" (bytes [start, stop) of a JSON-lines file), "lines" (`data`: whole lines of a
    compressed JSON-lines file, the first of them line `start` + 1), "parquet" (row group `start`, its first
    row `stop`), "txt" (a whole file, one document), "rows" (rows [start, stop) of a `datasets` dataset) or
    "texts" (documents that the main process read, the first of them document `start` of the source)."""

    kind: str
    path: str | None = None
    start: int = 0
    stop: int = 0
    texts: tuple[str, ...] | None = None
    data: bytes | None = None


def file_kind(path) -> tuple[str, str | None]:
    """("jsonl" | "parquet" | "txt", compression or None) of a local data file, from its name."""
    name = Path(path).name.lower()
    suffix = next((s for s in sorted(LOCAL_SUFFIXES, key=len, reverse=True) if name.endswith(s)), None)
    if suffix is None:
        got = "".join(Path(path).suffixes[-2:]) or "none"
        raise DataError(f"{path}: unsupported file type ({got}); use one of {', '.join(LOCAL_SUFFIXES)} "
                        "(a directory or a glob pattern of such files also works)")
    kind = {".parquet": "parquet", ".txt": "txt"}.get(suffix, "jsonl")
    return kind, COMPRESSIONS.get(Path(suffix).suffix) if suffix.count(".") > 1 else None


def expand_data_files(patterns: Sequence[str]) -> list[str]:
    """--data_files as given: files, directories (their data files, in name order) and glob patterns (in name
    order), each file once, in the order given. Fails on a name that matches nothing."""
    files = []
    for pattern in patterns:
        pattern = str(pattern)
        path = Path(pattern).expanduser()
        if path.is_dir():
            found = sorted(str(p) for p in path.iterdir() if p.is_file() and _supported(p))
            if not found:
                raise DataError(f"data directory {path} holds no data files ({', '.join(LOCAL_SUFFIXES)})")
        elif glob.has_magic(pattern) and not path.exists():
            found = sorted(p for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
            if not found:
                raise DataError(f"--data_files pattern {pattern!r} matches no file")
        else:
            found = [pattern]
        files += [f for f in found if f not in files]
    return files


def _supported(path: Path) -> bool:
    name = path.name.lower()
    return not name.startswith(".") and any(name.endswith(s) for s in LOCAL_SUFFIXES)


def open_decompressed(path, compression: str):
    """A binary stream of the decompressed content (gzip: the standard library; zstd: pyarrow's codec)."""
    if compression == "gzip":
        import gzip

        return gzip.open(path, "rb")
    import io

    import pyarrow as pa

    return io.BufferedReader(pa.CompressedInputStream(pa.OSFile(str(path)), compression), 1 << 20)


def check_local_file(path, text_column: str = "text") -> None:
    """Fail before any work on a missing file, an unsupported type or a missing text column."""
    path = Path(path)
    if path.is_dir():
        raise DataError(f"data file {path} is a directory; pass the files in it")
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    kind, compression = file_kind(path)
    if kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            schema = pq.ParquetFile(path).schema_arrow
        except (pa.ArrowException, OSError) as error:
            raise DataError(f"{path} is not a readable parquet file ({error}); write or download it again") from None
        if text_column not in schema.names:
            raise DataError(f"{path}: no {text_column!r} column (columns: {schema.names}); set --text_column")
        column_type = schema.field(text_column).type
        if not (pa.types.is_string(column_type) or pa.types.is_large_string(column_type)
                or pa.types.is_null(column_type) or str(column_type) == "string_view"):
            raise DataError(f"{path}, row 0: column {text_column!r} holds {column_type}, not text (the whole column "
                            "does); set --text_column")
    elif kind == "jsonl":
        try:
            with (open_decompressed(path, compression) if compression else open(path, "rb")) as f:
                number, line = 0, b""
                for number, line in enumerate(f, 1):
                    if line.strip():
                        break
        except (OSError, EOFError, ValueError) as error:  # not gzip/zstd, or cut short
            raise DataError(f"{path} cannot be decompressed as {compression} ({error}); download or write it "
                            "again") from None
        if line.lstrip().startswith(b"["):
            raise DataError(f"{path} is one JSON array; write one JSON object per line (.jsonl) instead")
        bad = _parse_lines([line], text_column)[1]  # the first row, checked now
        if bad is not None:
            raise DataError(f"{path}:{number}: {bad[1]}")


def local_chunks(path) -> Iterator[Chunk]:
    """The chunks of one local file, in order (read lazily: a compressed file is decompressed as they go)."""
    path = Path(path)
    kind, compression = file_kind(path)
    if kind == "txt":
        yield Chunk("txt", str(path))
    elif kind == "parquet":
        import pyarrow.parquet as pq

        metadata = pq.ParquetFile(path).metadata
        first_row = 0
        for i in range(metadata.num_row_groups):
            yield Chunk("parquet", str(path), i, first_row)
            first_row += metadata.row_group(i).num_rows
    elif compression:
        yield from _compressed_line_chunks(path, compression)
    else:
        size, start = path.stat().st_size, 0
        with open(path, "rb") as f:
            while start < size:
                f.seek(min(start + CHUNKING["jsonl_bytes"], size))
                f.readline()  # on to the end of the line: chunks hold whole lines
                yield Chunk("jsonl", str(path), start, f.tell())
                start = f.tell()


def _compressed_line_chunks(path: Path, compression: str) -> Iterator[Chunk]:
    """Whole lines, about CHUNKING["jsonl_bytes"] of them at a time, of a compressed JSON-lines file."""
    line, rest = 0, b""
    try:
        with open_decompressed(path, compression) as f:
            while True:
                block = f.read(CHUNKING["jsonl_bytes"])
                data = rest + block
                cut = data.rfind(b"\n") + 1 if block else len(data)
                if cut == 0 and block:  # no line end yet: read on
                    rest = data
                    continue
                if cut:
                    yield Chunk("lines", str(path), line, data=data[:cut])
                    line += data.count(b"\n", 0, cut)
                rest = data[cut:]
                if not block:
                    return
    except (OSError, EOFError, ValueError) as error:  # damaged or cut short
        raise DataError(f"{path}: cannot decompress it past line {line:,} ({error}); download or write it "
                        "again") from None


def _parse_lines(lines: Sequence[bytes], text_column: str) -> tuple[list, tuple[int, str] | None]:
    """The `text_column` of each non-blank JSON line (None where it is null), and (index, problem) of the first
    line that cannot be read (then the texts stop before it), or None."""
    texts = []
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except UnicodeDecodeError as error:
            problem = f"not UTF-8 text (byte 0x{line[error.start]:02x} at column {error.start + 1})"
        except json.JSONDecodeError as error:
            problem = f"not valid JSON ({error.msg})"
        else:
            if isinstance(row, dict) and text_column in row:
                texts.append(row[text_column])  # null, empty or not text: skipped and counted (`drop_empty`)
                continue
            problem = f"no {text_column!r} field (set --text_column)"
        return texts, (index, problem)
    return texts, None


def _chunk_lines(chunk: Chunk) -> list[bytes]:
    """The lines of a "jsonl" or "lines" chunk."""
    if chunk.kind == "lines":
        return chunk.data.split(b"\n")
    with open(chunk.path, "rb") as f:
        f.seek(chunk.start)
        return f.read(chunk.stop - chunk.start).split(b"\n")


def _jsonl_texts(chunk: Chunk, text_column: str) -> list[str]:
    """The texts of a "jsonl" or "lines" chunk; a bad line raises DataError with its file:line."""
    texts, bad = _parse_lines(_chunk_lines(chunk), text_column)
    if bad is None:
        return texts
    index, problem = bad
    if chunk.kind == "lines":
        before = chunk.start
    else:  # only on an error: the line number needs the lines before the chunk
        with open(chunk.path, "rb") as f:
            before = f.read(chunk.start).count(b"\n")
    raise DataError(f"{chunk.path}:{before + index + 1}: {problem}")


def _read_txt(path) -> str:
    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x} at column {column}); "
                        "convert the file to UTF-8 (binary files cannot be tokenized)") from None


def why_skipped(value) -> str | None:
    """Why a row's text is skipped ("is null", "is empty", "holds a list, not text"), or None: it is text."""
    if isinstance(value, str):
        return "is empty" if value == "" else None
    return "is null" if value is None else f"holds {type(value).__name__} {str(value)[:40]!r}, not text"


@dataclass(frozen=True)
class SkippedRow:
    """Where the first skipped row of a chunk is: `index`, the row's place in the chunk (for JSON lines: its
    line, blank lines included), and why (`why_skipped`)."""

    kind: str
    path: str | None
    start: int
    index: int
    why: str

    def location(self, source: str) -> str:
        """"file:line" for JSON lines, "file, row N" (from 0) for parquet and datasets."""
        if self.kind == "jsonl":  # a byte range: count the lines before it (done once per file, when warned)
            with open(self.path, "rb") as f:
                before = _lines_before(f, self.start)
            return f"{self.path}:{before + self.index + 1}"
        if self.kind == "lines":
            return f"{self.path}:{self.start + self.index + 1}"
        if self.kind == "txt":
            return str(self.path)
        return f"{self.path or source}, row {self.start + self.index}"


def _lines_before(f, offset: int) -> int:
    count, read = 0, 0
    while read < offset:
        block = f.read(min(1 << 20, offset - read))
        if not block:
            break
        count += block.count(b"\n")
        read += len(block)
    return count


def first_skipped_row(chunk: Chunk, rows: Sequence) -> SkippedRow | None:
    """The first row of `read_chunk`'s `rows` that `drop_empty` drops, located in its file, or None."""
    index = next((i for i, value in enumerate(rows) if why_skipped(value) is not None), None)
    if index is None:
        return None
    why = why_skipped(rows[index])
    if chunk.kind in ("jsonl", "lines"):  # rows are the non-blank lines: find the line
        index = [i for i, line in enumerate(_chunk_lines(chunk)) if line.strip()][index]
    start = {"parquet": chunk.stop}.get(chunk.kind, chunk.start)
    return SkippedRow(chunk.kind, chunk.path, start, index, why)


class SkippedRowWarnings:
    """One warning per file (or source), at its first skipped row, naming the file and row; the rest of the
    rows without text are only counted."""

    def __init__(self, text_column: str, source: str = "the data set"):
        self.text_column, self.source, self.warned = text_column, source, set()

    def __call__(self, skipped: SkippedRow | None) -> None:
        if skipped is None or (skipped.path or self.source) in self.warned:
            return
        self.warned.add(skipped.path or self.source)
        report("warning", f"{skipped.location(self.source)}: {self.text_column!r} {skipped.why}; the row is "
               "skipped, as are any others without text (they are counted)")


def drop_empty(texts: Sequence) -> tuple[list[str], np.ndarray]:
    """The documents without null, empty or non-string rows, and for each kept document (plus one past the
    last) how many rows were dropped before it: such rows are skipped and counted, never fatal."""
    kept, dropped_before, dropped = [], [], 0
    for text in texts:
        if not isinstance(text, str) or text == "":
            dropped += 1
            continue
        kept.append(text)
        dropped_before.append(dropped)
    dropped_before.append(dropped)
    return kept, np.array(dropped_before, dtype=np.int64)


def read_chunk(chunk: Chunk, text_column: str = "text", dataset=None) -> list[str]:
    """The chunk's rows, in order (null, empty or non-string ones included: see `drop_empty`)."""
    if chunk.kind == "texts":
        texts = list(chunk.texts)
    elif chunk.kind == "txt":
        texts = [_read_txt(chunk.path)]
    elif chunk.kind == "parquet":
        import pyarrow.parquet as pq

        texts = pq.ParquetFile(chunk.path).read_row_group(chunk.start, columns=[text_column]).column(0).to_pylist()
    elif chunk.kind == "rows":
        texts = dataset[chunk.start : chunk.stop][text_column]
    else:
        texts = _jsonl_texts(chunk, text_column)
    return texts


def read_documents(path, text_column: str = "text") -> list[str]:
    """The documents of a local file: .jsonl/.json/.parquet one per row (`text_column`), .txt one per file."""
    check_local_file(path, text_column)
    return [text for chunk in local_chunks(path) for text in drop_empty(read_chunk(chunk, text_column))[0]]


def encode_documents(texts: Sequence[str], tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """(tokens, document ends): every text as <|endoftext|> + its ids, in one array (one object for a
    worker to send back). One document at a time: here the process is the unit of parallelism
    (tiktoken's encode_ordinary_batch would start a thread pool per call)."""
    ids = [tokenizer.encode_ordinary(text) for text in texts]
    lengths = np.fromiter((1 + len(x) for x in ids), dtype=np.int64, count=len(ids))
    ends = np.cumsum(lengths)
    starts = ends - lengths
    tokens = np.empty(int(ends[-1]) if len(ends) else 0, dtype=token_dtype(tokenizer.vocab_size))
    tokens[starts] = tokenizer.eot_token_id
    for start, document in zip(starts.tolist(), ids):
        tokens[start + 1 : start + 1 + len(document)] = document
    return tokens, ends


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def ordered_map(function, tasks: Iterable, num_proc: int = 1, initializer=None, initargs=()) -> Iterator:
    """`function(task)` for each task, in the tasks' order, computed by `num_proc` processes (in this
    process when 1). At most 4 tasks per process are in flight (Pool.imap would read all the tasks
    ahead: a whole streamed dataset into memory). A worker that dies (killed, out of memory) is an error
    (BrokenProcessPool), not a wait for its result forever, as with multiprocessing.Pool."""
    if num_proc <= 1:
        if initializer is not None:
            initializer(*initargs)
        yield from map(function, tasks)
        return
    # fork: the workers inherit initargs (tokenizer, dataset) instead of unpickling them
    context = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
    pool = ProcessPoolExecutor(num_proc, mp_context=context, initializer=initializer, initargs=initargs)
    try:
        pending = deque()
        for task in tasks:
            pending.append(pool.submit(function, task))
            if len(pending) >= 4 * num_proc:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:  # also when the caller stops early: the tasks still queued are dropped
        pool.shutdown(wait=True, cancel_futures=True)


_worker = {}


def _init_worker(tokenizer, text_column: str, dataset) -> None:
    _worker.update(tokenizer=tokenizer, text_column=text_column, dataset=dataset)


def _encode_chunk(task: tuple[Chunk, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, SkippedRow | None]:
    chunk, skip = task
    rows = read_chunk(chunk, _worker["text_column"], _worker["dataset"])
    texts, dropped_before = drop_empty(rows)
    tokens, ends = encode_documents(texts[skip:], _worker["tokenizer"])
    # rows dropped before document `skip` were counted by whoever skipped it; at a chunk's start none were
    already_counted = dropped_before[min(skip, len(dropped_before) - 1)] if skip else 0
    skipped = first_skipped_row(chunk, rows) if dropped_before[-1] > already_counted else None
    return tokens, ends, dropped_before[skip:] - already_counted, skipped


def tokenize_chunks(tasks: Iterable[tuple[Chunk, int]], tokenizer, text_column: str = "text", num_proc: int = 1,
                    dataset=None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, SkippedRow | None]]:
    """(tokens, document ends, empty rows dropped before each document and in all, the first dropped row or
    None) of each (chunk, documents to skip at its start), in order, by `num_proc` processes. `dataset`: the
    `datasets` dataset that "rows" chunks index (inherited by the workers). Null or empty rows are dropped
    (`drop_empty`)."""
    return ordered_map(_encode_chunk, tasks, num_proc, _init_worker, (tokenizer, text_column, dataset))


def tokenize_documents(documents: Sequence[str], tokenizer, num_proc: int = 1) -> np.ndarray:
    """One token stream in memory: each document prefixed with the end-of-text token (GPT-2's separator)."""
    chunks = (Chunk("texts", texts=tuple(batch)) for batch in batched(documents, 64))
    return _concatenate(tokenize_chunks(((chunk, 0) for chunk in chunks), tokenizer, num_proc=num_proc), tokenizer)


def tokenize_files(paths, tokenizer, text_column: str = "text", num_proc: int = 1,
                   skipped: list | None = None) -> np.ndarray:
    """Local .txt/.jsonl/.json/.parquet (and .jsonl.gz/.jsonl.zst) files -> one token stream (see
    `tokenize_documents`): a .txt file is one document, the others one document per row in `text_column`.
    Rows whose `text_column` is null, empty or not text are skipped; `skipped`, when given, receives each
    chunk's count of them."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    for path in paths:
        check_local_file(path, text_column)
    tasks = ((chunk, 0) for path in paths for chunk in local_chunks(path))
    skipped = [] if skipped is None else skipped
    stream = _concatenate(tokenize_chunks(tasks, tokenizer, text_column, num_proc), tokenizer, skipped,
                          SkippedRowWarnings(text_column))
    if len(stream) == 0:
        raise DataError(f"no documents in {', '.join(map(str, paths))}"
                        + (f": its {sum(skipped)} rows have a null, empty or non-text {text_column!r}; set "
                           "--text_column" if sum(skipped) else ""))
    return stream


def _concatenate(results, tokenizer, skipped: list | None = None, warn=None) -> np.ndarray:
    """The token arrays of `tokenize_chunks` in one; each chunk's count of dropped rows goes to `skipped`,
    and its first dropped row to `warn`."""
    pieces = []
    for tokens, _, dropped_before, first_skipped in results:
        pieces.append(tokens)
        if warn is not None:
            warn(first_skipped)
        if skipped is not None:
            skipped.append(int(dropped_before[-1]))
    return np.concatenate(pieces) if pieces else np.empty(0, dtype=token_dtype(tokenizer.vocab_size))
