"""One storage layer for local paths and URIs (s3://, gs://, ...) through pyarrow.fs.

Every stage reads and writes through these helpers, so a job that runs on a laptop runs against
S3 unchanged. Writes are atomic: a reader (or a resumed run) never sees half a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import posixpath
import uuid
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from mgc.errors import MgcError


def is_uri(path: str) -> bool:
    return "://" in path


def absolute(path: str) -> str:
    """A local path made absolute (here, in the driver: Ray workers resolve paths in other
    folders); a URI as it is."""
    return path if is_uri(path) else os.path.abspath(path)


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """Return the filesystem and the path inside it for a local path or a URI.

    s3:// honours AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL (S3-compatible stores), which pyarrow
    itself ignores; credentials and region come from the standard AWS variables or profile.
    """
    endpoint_url = _endpoint()
    if path.startswith("s3://") and endpoint_url:
        endpoint = urlparse(endpoint_url)
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        fs = pafs.S3FileSystem(endpoint_override=endpoint.netloc, scheme=endpoint.scheme or "https", region=region)
        return fs, path[len("s3://") :].rstrip("/")
    if is_uri(path) and not path.startswith("file://"):
        try:
            return pafs.FileSystem.from_uri(path)
        except (pa.ArrowInvalid, OSError) as e:
            raise MgcError(f"{path}: cannot open storage: {e}") from e
    local = path[len("file://") :] if path.startswith("file://") else path
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(local))


def _endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")


def explain(path: str, error: BaseException, context: str = "") -> str:
    """What an object store's error means for `path`, in words a user can act on; `context`
    (e.g. "output is not writable: ") goes between the path and the reason."""
    path = f"{path}: {context}".removesuffix(": ") if context else path
    text = str(error)
    if any(k in text for k in ("ACCESS_DENIED", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied")):
        return (
            f"{path}: access denied: check the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, "
            f"AWS_PROFILE or the node's role) and the bucket's policy ({text})"
        )
    if any(k in text for k in ("NETWORK_CONNECTION", "Could not connect", "curlCode", "Could not resolve host")):
        return (
            f"{path}: cannot reach the storage endpoint {_endpoint() or '(the default for the URI)'}: "
            f"check AWS_ENDPOINT_URL and the network ({text})"
        )
    if "NoSuchBucket" in text or ("Bucket" in text and "not found" in text):
        return f"{path}: the bucket does not exist ({text})"
    return f"{path}: {text}"


@contextlib.contextmanager
def _clear_errors(path: str):
    """Storage failures other than a missing file become an MgcError naming `path`."""
    try:
        yield
    except (FileNotFoundError, IsADirectoryError, MgcError):
        raise
    except (OSError, pa.ArrowException) as e:
        raise MgcError(explain(path, e)) from e


def _check_bucket(path: str, fs: pafs.FileSystem, inner: str) -> None:
    """For a path that was not found: say so if it is its whole bucket that is missing."""
    bucket = inner.split("/", 1)[0]
    if path.startswith("s3://") and fs.get_file_info(bucket).type == pafs.FileType.NotFound:
        raise MgcError(f"{path}: the bucket {bucket!r} does not exist")


def join(base: str, *parts: str) -> str:
    """Join path parts onto a local path or URI (URIs always use '/')."""
    if is_uri(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def exists(path: str) -> bool:
    """Whether `path` exists; a missing bucket, denied access or an unreachable store is an
    MgcError naming it rather than False."""
    fs, p = resolve(path)
    with _clear_errors(path):
        if fs.get_file_info(p).type != pafs.FileType.NotFound:
            return True
        _check_bucket(path, fs, p)
        return False


@contextlib.contextmanager
def open_input(path: str, buffer_size: int = 8 << 20):
    """A file as a binary stream, read as it is consumed: parsers stream it, so a 200 MB
    tracks.csv is never held whole. FileNotFoundError if it is absent."""
    fs, p = resolve(path)
    with _clear_errors(path):
        info = fs.get_file_info(p)
        if info.type == pafs.FileType.NotFound:
            _check_bucket(path, fs, p)
            raise FileNotFoundError(path)
        if info.type == pafs.FileType.Directory:
            raise IsADirectoryError(path)
        # Buffered: on an object store each unbuffered read is a request of its own.
        with fs.open_input_stream(p, buffer_size=buffer_size or None) as f:
            yield f


def read_bytes(path: str) -> bytes:
    """Read a whole file; FileNotFoundError if it is absent."""
    with open_input(path, buffer_size=0) as f:  # one read of it all: no buffer
        return f.read()


def list_files(directory: str, suffix: str | tuple[str, ...] = "", recursive: bool = False) -> list[str]:
    """Visible files in a directory ([] if it does not exist), as paths relative to it: names,
    or with `recursive`, paths through its sub-folders ('/'-separated)."""
    fs, p = resolve(directory)
    with _clear_errors(directory):
        if fs.get_file_info(p).type != pafs.FileType.Directory:
            return []
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=recursive))
    root = p.rstrip("/") + "/"
    return sorted(
        i.path[len(root) :].replace(os.sep, "/")
        for i in infos
        if i.type == pafs.FileType.File
        and i.base_name.lower().endswith(suffix)
        and not any(part.startswith((".", "_")) for part in i.path[len(root) :].replace(os.sep, "/").split("/"))
    )


def file_stats(root: str, files: list[str]) -> dict[str, tuple[int, int]]:
    """(size, modification time in ns) of `files` (paths relative to `root`, as list_tree gives
    them): a stat each in a local folder, one listing of an object store's prefix. Files gone
    since are left out."""
    fs, p = resolve(root)
    if isinstance(fs, pafs.LocalFileSystem):
        stats = {}
        for rel in files:
            with contextlib.suppress(OSError):
                st = os.stat(os.path.join(p, rel))
                stats[rel] = (st.st_size, st.st_mtime_ns)
        return stats
    base, wanted = p.rstrip("/") + "/", set(files)
    with _clear_errors(root):
        infos = fs.get_file_info(pafs.FileSelector(p, recursive=True))
    return {
        i.path[len(base) :]: (i.size, i.mtime_ns)
        for i in infos
        if i.path[len(base) :] in wanted and i.mtime_ns is not None
    }


@dataclasses.dataclass
class Tree:
    """The files under a folder (paths relative to it, '/'-separated), and the symbolic links
    not followed: `outside` (link -> where it leads, outside the folder: never read) and
    `skipped` (links inside it, followed only when asked)."""

    files: list[str]
    outside: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    skipped: int = 0


def inside(path: str, root: str) -> bool:
    """Whether local `path`, links resolved, lies within `root`, links resolved."""
    real, base = os.path.realpath(path), os.path.realpath(root)
    return os.path.commonpath([real, base]) == base


def list_tree(root: str, suffix: tuple[str, ...], follow_links: bool = False) -> Tree:
    """Files ending in `suffix` under `root`, recursively; names starting with "." or "_" left
    out, as list_files does. A local folder's symbolic links never lead out of it: a link to a file
    or folder outside is reported in `outside`, never read; links inside are followed with
    `follow_links`, else counted in `skipped`. A followed link to something listed already is
    listed once, under its real path. Object stores have no links."""
    if is_uri(root):
        return Tree(list_files(root, suffix, recursive=True))
    base = os.path.abspath(os.path.expanduser(root))
    if not os.path.isdir(base):
        raise MgcError(f"{root}: not a folder")
    tree, found = Tree([]), {}  # found: real path -> (through a link, relative path)
    visited = {os.path.realpath(base)}
    real_dirs, linked_dirs = [""], []
    while real_dirs or linked_dirs:
        # Every real folder before any followed link, so a link never claims a real folder's files.
        rel_dir, through_link = (real_dirs.pop(), False) if real_dirs else (linked_dirs.pop(), True)
        try:
            entries = list(os.scandir(os.path.join(base, rel_dir)))
        except OSError as e:
            raise MgcError(f"{os.path.join(root, rel_dir)}: cannot list the folder ({e.strerror})") from None
        for e in entries:
            rel = f"{rel_dir}/{e.name}" if rel_dir else e.name
            wanted = e.name.lower().endswith(suffix)
            if e.name.startswith((".", "_")) or not (wanted or e.is_dir()):
                continue
            link = e.is_symlink()
            if link:
                if not inside(e.path, base):
                    tree.outside.append((rel, os.path.realpath(e.path)))
                    continue
                if not follow_links:
                    tree.skipped += 1
                    continue
            if e.is_dir():
                real = os.path.realpath(e.path)
                if real not in visited:  # a link back up the tree is walked once
                    visited.add(real)
                    (linked_dirs if link or through_link else real_dirs).append(rel)
            elif wanted and e.is_file():
                key, candidate = os.path.realpath(e.path), (link or through_link, rel)
                found[key] = min(found.get(key, candidate), candidate)  # the real entry wins
    tree.files = sorted(rel for _, rel in found.values())
    return tree


def _write_atomic(path: str, write) -> None:
    """Write through `write(stream)` so that `path` appears complete or not at all.

    Object stores publish an object only when its upload completes, so we write in place there;
    on a filesystem we write a hidden temporary beside it and rename.
    """
    fs, p = resolve(path)
    parent = posixpath.dirname(p) if is_uri(path) else os.path.dirname(p)
    fs.create_dir(parent, recursive=True)
    if not isinstance(fs, pafs.LocalFileSystem):
        with fs.open_output_stream(p) as f:
            write(f)
        return
    tmp = os.path.join(parent, f".{os.path.basename(p)}.{uuid.uuid4().hex}.tmp")
    try:
        with fs.open_output_stream(tmp) as f:
            write(f)
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_bytes(path: str, data: bytes) -> None:
    _write_atomic(path, lambda f: f.write(data))


def write_json(path: str, obj: Any) -> None:
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def read_json(path: str) -> Any:
    """A JSON file; MgcError naming it if it does not parse (FileNotFoundError if absent)."""
    try:
        return json.loads(read_bytes(path))
    except ValueError as e:
        raise MgcError(f"{path}: not valid JSON ({e})") from None


def write_parquet(
    table: pa.Table, path: str, scalar_columns: list[str] | None = None, row_groups: list[int] | None = None
) -> None:
    """Write one Parquet file atomically.

    With `scalar_columns`, only those columns get dictionaries and statistics: on tensor columns
    both slow the write (bench/README.md, "Extraction") and make the file larger. `row_groups`:
    the rows' consecutive runs, by length, each written as a row group of its own (a reader's
    filter skips a row group whose statistics rule it out).
    """
    kwargs = {} if scalar_columns is None else {"use_dictionary": scalar_columns, "write_statistics": scalar_columns}

    def write(f) -> None:
        with pq.ParquetWriter(f, table.schema, compression="zstd", **kwargs) as writer:
            start = 0
            for n in row_groups or [table.num_rows]:
                writer.write_table(table.slice(start, n), row_group_size=max(n, 1))
                start += n

    _write_atomic(path, write)


# Files a scan reads at most: a scan keeps ~65 KB a file it opened until it ends, which over
# FMA large's 3,331 shards held 220 MB in the driver (bench/README.md, "Scale").
READ_GROUP = 256


def read_parquet(path: str, columns: list[str] | None = None, schema: pa.Schema | None = None) -> pa.Table:
    """Read a Parquet file or a directory of them (hidden and _-prefixed files are skipped), in
    scans of at most READ_GROUP files. With `schema`, files that lack one of its columns read it
    as nulls (files written without them); without, every file is read with the first one's schema."""
    import pyarrow.dataset as pads

    fs, p = resolve(path)
    with _clear_errors(path):
        found = pads.dataset(p, filesystem=fs, format="parquet", schema=schema)
        files = found.files
        if len(files) <= READ_GROUP:
            return found.to_table(columns=columns)
        # Fresh fragments for each scan (those of `found` would keep what the scan caches in
        # them), with the sizes one listing gives, so that no file is looked up on its own.
        sizes = {i.path: i.size for i in fs.get_file_info(pafs.FileSelector(p, recursive=True))}
        return pa.concat_tables(
            pads.FileSystemDataset(
                [found.format.make_fragment(f, fs, file_size=sizes.get(f)) for f in files[i : i + READ_GROUP]],
                found.schema,
                found.format,
                fs,
            ).to_table(columns=columns)
            for i in range(0, len(files), READ_GROUP)
        )


def ray_read_parquet(path: str):
    """A directory of Parquet files (or one file) as a Ray Dataset, through our filesystems, with
    Ray Data's first Parquet reader (DataSource V1). Ray 2.60's default reader lists files in a
    task of its own and samples the first file on the driver: slower for one split, far slower
    over FMA large's shards (bench/README.md, "Reading shards through Ray Data"); training reads
    its shards at least five times a run.

    One read task and block per file: left to itself, V1 cuts each file's rows into several
    blocks to reach 200, and with `preserve_order` (cached splits) its read tasks then wait on the
    consumer, idle, so that cached splits are slow to build."""
    import ray.data

    fs, p = resolve(path)
    files = len(list_files(path, ".parquet")) or 1  # a single file lists nothing
    ctx = ray.data.DataContext.get_current()
    v2, ctx.use_datasource_v2 = ctx.use_datasource_v2, False
    try:
        return ray.data.read_parquet(p, filesystem=fs, override_num_blocks=files)
    finally:
        ctx.use_datasource_v2 = v2


def remove_stale_temporaries(directory: str) -> int:
    """Delete temporaries a killed writer left behind in a local directory; returns how many."""
    fs, p = resolve(directory)
    if not isinstance(fs, pafs.LocalFileSystem) or not os.path.isdir(p):
        return 0
    stale = [n for n in os.listdir(p) if n.startswith(".") and n.endswith(".tmp")]
    for n in stale:
        os.remove(os.path.join(p, n))
    return len(stale)


def ensure_writable_dir(path: str) -> None:
    """Create `path` if needed and prove we can write there, or fail with a clear message."""
    probe = join(path, f".mgc-write-probe-{uuid.uuid4().hex}")
    try:
        fs, p = resolve(path)
        fs.create_dir(p, recursive=True)
        fp = resolve(probe)[1]
        with fs.open_output_stream(fp) as f:
            f.write(b"ok")
        fs.delete_file(fp)
    except MgcError:
        raise
    except (OSError, pa.ArrowException) as e:
        raise MgcError(explain(path, e, "output is not writable")) from e
