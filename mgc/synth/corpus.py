"""Writing the corpus: the planned tracks rendered (or broken) into MP3s by a process pool, the
link pool's hard links, the metadata, and the stamp that lets a corpus already written be reused."""

from __future__ import annotations

import dataclasses
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pandas as pd

from mgc import fma, storage
from mgc.errors import MgcError
from mgc.synth.clip import render
from mgc.synth.config import SynthConfig
from mgc.synth.genres import GENRES
from mgc.synth.metadata import write_metadata
from mgc.synth.planning import plan


def generate(cfg: SynthConfig, progress: bool = True) -> str:
    """Write the corpus under cfg.out and return it. A corpus already written with the same config
    is reused as it is."""
    if storage.is_uri(cfg.out):
        raise MgcError(f"{cfg.out}: synth writes to a local folder; copy it to object storage afterwards")
    meta_dir = os.path.join(cfg.out, "fma_metadata")
    stamp = os.path.join(meta_dir, "synth_config.json")
    wanted = stamp_of(cfg)
    if os.path.exists(stamp) and storage.read_json(stamp) == wanted:
        return cfg.out
    df = plan(cfg)
    audio_root = os.path.join(cfg.out, cfg.audio_dir)
    paths = [fma.audio_path(audio_root, t) for t in df["track_id"]]
    if cfg.link_pool:
        jobs, links = _link_pool(df, paths, cfg)
    else:
        jobs, links = _jobs(df, paths, cfg), []
    _render_all(jobs, cfg.workers, progress)
    _hard_link(links, progress)
    write_metadata(df, cfg, meta_dir)
    storage.write_json(stamp, wanted)
    return cfg.out


def stamp_of(cfg: SynthConfig) -> dict:
    """What synth_config.json holds for cfg, as JSON holds it. The options listed here are left out
    at their defaults, so that the stamp of a corpus written without them still matches (and the
    corpus is reused)."""
    wanted = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("out", "workers")}
    wanted["upload_conditions"] = list(cfg.upload_conditions)
    for k, unset in (
        ("upload_conditions", []),
        ("held_out", 0.1),
        ("multi_genre", 0.0),
        ("subgenres", False),
        ("crossover", 0.0),
    ):
        if wanted[k] == unset:
            del wanted[k]
    return wanted


def _jobs(df: pd.DataFrame, paths: list[str], cfg: SynthConfig) -> list[tuple]:
    """One `_write_track` job per planned track."""
    return [
        (
            p,
            r.genre,
            r.artist_seed,
            r.track_seed,
            cfg.seconds,
            cfg.sample_rate,
            r.kind,
            cfg.upload_conditions if r.upload else (),
            _layers(r),
        )
        for p, r in zip(paths, df.itertuples())
    ]


def _layers(r) -> dict:
    """`render`'s keyword arguments for a plan row's sub-genre, blend and crossover, if any."""
    layers = {
        "subgenre": int(r.subgenre),
        "blend": r.blend,
        "blend_subgenre": int(r.blend_subgenre),
        "crossover": r.crossover,
        "crossover_level": float(r.crossover_level),
    }
    return {k: v for k, v in layers.items() if v}


def _link_pool(df: pd.DataFrame, paths: list[str], cfg: SynthConfig) -> tuple[list[tuple], list[tuple[str, str]]]:
    """The clips to render into <out>/_link_pool/ (`link_pool` good ones shared by the genres,
    rendered as the first tracks of each genre; one file per kind of broken file) and the
    (pool file, track path) hard links that give every track one of them. Missing files stay missing."""
    pool_dir = os.path.join(cfg.out, "_link_pool")
    per_genre = max(1, cfg.link_pool // len(GENRES))
    jobs, links, sources = [], [], {}
    rank = df.groupby(["genre", "kind"]).cumcount().to_numpy()
    for path, r, i in zip(paths, df.itertuples(), rank):
        if r.kind == "missing":
            continue
        key = (r.genre, int(i) % per_genre) if r.kind == "ok" else (r.kind, 0)
        if key not in sources:
            sources[key] = os.path.join(pool_dir, f"{key[0].replace(' ', '_').replace('/', '_')}-{key[1]}.mp3")
            jobs.append(
                (sources[key], r.genre, r.artist_seed, r.track_seed, cfg.seconds, cfg.sample_rate, r.kind, (), {})
            )
        links.append((sources[key], path))
    return jobs, links


def _render_all(jobs: list[tuple], workers: int, progress: bool) -> None:
    """Run the `_write_track` jobs in a pool of `workers` processes (0: one per core)."""
    from tqdm.auto import tqdm

    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for _ in tqdm(
            pool.map(_write_track, jobs, chunksize=4), total=len(jobs), desc="synth", unit="track", disable=not progress
        ):
            pass


def _write_track(job: tuple) -> None:
    path, genre, artist_seed, track_seed, seconds, sr, kind, upload, layers = job
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if kind == "missing":
        return
    if kind == "empty":
        open(path, "wb").close()
        return
    if kind == "not_audio":
        with open(path, "wb") as f:
            f.write(b"<html><body>404 Not Found</body></html>\n" * 20)
        return
    if kind == "short":
        seconds = 1.5
    x = render(genre, artist_seed, track_seed, seconds, sr, upload, **layers)
    if kind == "silent":
        x = np.zeros_like(x)
    _write_mp3(path, x, sr)
    if kind == "truncated":
        # Cut mid-stream, as an interrupted upload leaves a file: 40% of it still decodes.
        with open(path, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[: int(len(data) * 0.4)])


def _write_mp3(path: str, x: np.ndarray, sr: int) -> None:
    """320 kbit/s constant, as most FMA clips are encoded. LAME's fast algorithm (quality 7)
    encodes 7x faster than libsndfile's default setting; the clips are synthetic, so its
    psychoacoustic shortcuts cost nothing that matters."""
    import lameenc

    enc = lameenc.Encoder()
    enc.set_bit_rate(320)
    enc.set_in_sample_rate(sr)
    enc.set_channels(x.shape[1])
    enc.set_quality(7)
    pcm = (np.clip(x, -1.0, 1.0) * 32767).astype("<i2")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(enc.encode(pcm.tobytes()) + enc.flush())
    os.replace(tmp, path)


def _hard_link(links: list[tuple[str, str]], progress: bool) -> None:
    """Make each (pool file, track path) hard link, replacing whatever is at the track's path."""
    from tqdm.auto import tqdm

    for source, path in tqdm(links, desc="link", unit="track", disable=not progress or not links, mininterval=1.0):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.lexists(path):
            os.remove(path)
        os.link(source, path)
