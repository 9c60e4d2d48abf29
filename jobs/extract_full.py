"""Extraction as a Ray job:

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/extract_full.py --fma-root /data/fma --audio-dir fma_large --subset large \
            --out s3://bucket/fma/features

Takes the options of `mgc extract` (see `python jobs/extract_full.py --help`).
"""

import sys
from pathlib import Path

# With --working-dir the project is the job's cwd but not on sys.path of this script.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["extract", *sys.argv[1:]]))
