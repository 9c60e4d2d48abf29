"""Decoding: any file libsndfile reads (MP3, WAV, FLAC, OGG/Vorbis/Opus, AIFF, AU) from a local
path, a URI or bytes in memory (an upload to `mgc serve`, never written to disk), to mono float32
at the feature sample rate."""

from __future__ import annotations

import io
import os
import re
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import soxr

from mgc import storage
from mgc.errors import Reject
from mgc.features import FeatureConfig


@dataclass(frozen=True)
class Upload:
    """An audio file's bytes, and the name messages give it: `load` decodes it from memory."""

    data: bytes
    name: str = "upload"

    def __str__(self) -> str:
        return self.name


def _open(path: str | Upload):
    """Local files go straight to libsndfile; remote ones are fetched whole (a 30 s MP3 is ~1 MB);
    an Upload is read from memory."""
    if isinstance(path, Upload):
        if not path.data:
            raise Reject("decode_error", f"{path}: file is empty (0 bytes)")
        return io.BytesIO(path.data)
    if not storage.is_uri(path):
        if not os.path.exists(path):
            raise Reject("missing_file", f"{path}: no such file")
        if os.path.isdir(path):
            raise Reject("decode_error", f"{path}: is a directory")
        if os.path.getsize(path) == 0:
            raise Reject("decode_error", f"{path}: file is empty (0 bytes)")
        return path
    try:
        data = storage.read_bytes(path)
    except FileNotFoundError:
        raise Reject("missing_file", f"{path}: no such object") from None
    except OSError as e:
        raise Reject("missing_file", f"{path}: cannot read: {e}") from None
    if not data:
        raise Reject("decode_error", f"{path}: file is empty (0 bytes)")
    return io.BytesIO(data)


BLOCK_SECONDS = 60  # decode unit of long files


def load(path: str | Upload, cfg: FeatureConfig) -> np.ndarray:
    """Decode `path` (or an Upload's bytes) to mono float32 at cfg.sample_rate (at most
    cfg.max_seconds of it).

    Raises Reject('missing_file' | 'decode_error') for files that cannot be used.
    """
    source = _open(path)
    pieces = []
    try:
        f = sf.SoundFile(source)
    except (sf.LibsndfileError, sf.SoundFileError, RuntimeError, ValueError) as e:
        raise Reject("decode_error", f"{path}: {_what(e)}") from None
    try:
        with f:
            sr = f.samplerate
            frames = -1 if cfg.max_seconds is None else int(cfg.max_seconds * sr)
            wanted = f.frames if frames < 0 else min(frames, f.frames)
            if wanted <= BLOCK_SECONDS * sr:  # a clip: one read, one resample (the fast path)
                pieces.append(_downmix(path, f.read(frames=frames, dtype="float32", always_2d=True)))
                if sr != cfg.sample_rate:
                    pieces[0] = soxr.resample(pieces[0], sr, cfg.sample_rate, quality="HQ")
            else:
                # Blocks mixed down and resampled as they come: a long file never exists as
                # multi-channel float32 at once (an hour of 44.1 kHz stereo would be 1.3 GB).
                stream = (
                    soxr.ResampleStream(sr, cfg.sample_rate, 1, dtype="float32", quality="HQ")
                    if sr != cfg.sample_rate
                    else None
                )
                for x in f.blocks(blocksize=BLOCK_SECONDS * sr, frames=frames, dtype="float32", always_2d=True):
                    mono = _downmix(path, x)
                    pieces.append(mono if stream is None else stream.resample_chunk(mono))
                if stream is not None:
                    pieces.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    except (sf.LibsndfileError, sf.SoundFileError, RuntimeError, ValueError) as e:
        raise Reject(
            "decode_error", f"{path}: truncated or corrupt after {_decodable_seconds(source):.1f} s ({_what(e)})"
        ) from None
    if sum(len(p) for p in pieces) == 0:
        raise Reject("decode_error", f"{path}: no audio frames decoded")
    return np.ascontiguousarray(pieces[0] if len(pieces) == 1 else np.concatenate(pieces), dtype=np.float32)


def _what(error: Exception) -> str:
    """libsndfile's reason in words: it calls a file of no known format 'not recognised' or, for
    a .mp3 name, 'not a regular file'."""
    text = str(error).split("': ", 1)[-1].strip()
    # A file in memory (an upload) is named by its object's repr: the reason is what follows.
    text = re.sub(r"^Error opening <[^>]*>: ", "", text)
    if any(k in text for k in ("not recognised", "unknown format", "not a regular file")):
        return f"not a recognised audio format (libsndfile: {text})"
    return text


def _decodable_seconds(source) -> float:
    """How much of a file that fails mid-stream decodes, second by second (only on that error path)."""
    if hasattr(source, "seek"):
        source.seek(0)
    done, rate = 0, 1
    try:
        with sf.SoundFile(source) as f:
            rate = f.samplerate
            for block in f.blocks(blocksize=rate, dtype="float32"):
                done += len(block)
    except Exception:  # noqa: BLE001 - where it fails is the answer
        pass
    return done / rate


def _downmix(path: str, x: np.ndarray) -> np.ndarray:
    if not np.isfinite(x).all():
        raise Reject("decode_error", f"{path}: decoded samples contain NaN or infinity")
    # Summing column views is much faster than x.mean(axis=1) over interleaved channels
    # (bench/README.md, "Extraction").
    mono = x[:, 0].copy()
    for c in range(1, x.shape[1]):
        mono += x[:, c]
    if x.shape[1] > 1:
        mono *= np.float32(1.0 / x.shape[1])
    return mono
