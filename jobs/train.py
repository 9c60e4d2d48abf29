"""Training as a Ray job:

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/train.py --features s3://bucket/fma/features --model cnn_lstm \
            --num-workers 8 --use-gpu --epochs 30 --storage-path s3://bucket/runs

Takes the options of `mgc train` (see `python jobs/train.py --help`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
