"""Labelling new uploads as a Ray job:

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/label.py --model s3://bucket/runs/best/model \
            --input s3://bucket/uploads/2026-11-21/ --out s3://bucket/labels/2026-11-21/

Takes the options of `mgc label` (see `python jobs/label.py --help`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["label", *sys.argv[1:]]))
