"""The synthetic FMA-format corpus; its code is in mgc.synth.genres for now."""

from mgc.synth.genres import *  # noqa: F403
