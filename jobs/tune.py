"""A learning-rate x dropout sweep as a Ray job:

    ray job submit --address http://HEAD:8265 --working-dir . -- \
        python jobs/tune.py --features s3://bucket/fma/features --model cnn_lstm \
            --num-samples 64 --max-concurrent 8 --gpus-per-trial 1 --storage-path s3://bucket/sweeps

and after an interruption: python jobs/tune.py --resume --storage-path s3://bucket/sweeps --name cnn_lstm-sweep.
Takes the options of `mgc tune` (see `python jobs/tune.py --help`).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mgc.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["tune", *sys.argv[1:]]))
