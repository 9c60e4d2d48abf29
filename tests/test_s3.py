"""Extraction into S3: an S3-compatible server on 127.0.0.1 (moto), reached through the standard
AWS variables (AWS_ENDPOINT_URL, keys, region) by the driver and the cluster's workers."""

from urllib.parse import urlparse

import pyarrow.fs as pafs
import pytest

from helpers import assert_complete_and_unique
from mgc import fma, storage
from mgc.errors import MgcError
from mgc.extract import ExtractConfig, run


@pytest.fixture(scope="module")
def bucket(s3_server):
    endpoint = urlparse(s3_server["AWS_ENDPOINT_URL"])
    pafs.S3FileSystem(endpoint_override=endpoint.netloc, scheme="http", allow_bucket_creation=True).create_dir("mgc-test")
    return "s3://mgc-test"


def test_extract_writes_shards_rejects_and_summary_to_s3(ray_connected, bucket, corpus, truth):
    out = f"{bucket}/features"
    summary = run(fma.manifest(str(corpus)), ExtractConfig(out=out, tracks_per_shard=8, progress=False))
    assert storage.list_files(f"{out}/features", ".parquet") == [f"part-{k:06d}.parquet" for k in range(6)]
    assert storage.list_files(f"{out}/rejects", ".parquet") == [f"part-{k:06d}.parquet" for k in range(6)]
    assert {"_config.json", "_summary.json", "_manifest.parquet"} <= {i.base_name for i in storage.resolve(out)[0].get_file_info(pafs.FileSelector("mgc-test/features"))}
    assert_complete_and_unique(out, truth, segments_per_track=3)
    assert storage.read_json(f"{out}/_summary.json")["tracks_ok"] == summary["tracks_ok"] == int((truth["expected"] == "ok").sum())
    again = run(fma.manifest(str(corpus)), ExtractConfig(out=out, tracks_per_shard=8, progress=False))
    assert again["this_run"]["tracks_processed"] == 0


def test_a_missing_bucket_fails_before_work_naming_the_uri(ray_connected, s3_server, corpus):
    with pytest.raises(MgcError, match="s3://no-such-bucket/features: output is not writable"):
        run(fma.manifest(str(corpus)), ExtractConfig(out="s3://no-such-bucket/features", progress=False))
