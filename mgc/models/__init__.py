"""Networks from the genre-classification literature, as a registry: one module per family, each
registering its architectures (what they read, their default sizes, their encoder).

- cnn.py:     cnn (four conv blocks, dense head), cnn_lstm and cnn_bilstm (the same trunk, time
              as the sequence axis, stacked LSTMs)
- lstm.py:    lstm (five stacked LSTMs over the MFCC sequence)
- residual.py: crnn (residual encoder that pools frequency down to one band, then an LSTM) and
              resnet2d (the same encoder, global pooling over time)
- cnn1d.py:   cnn1d (four strided/pooled 1-D conv stages over the waveform, global pooling)
- mm_crnn.py: mm_crnn (a 1-D waveform encoder and a 2-D log-mel encoder whose feature maps are
              concatenated along channels and fed to one LSTM)
- baseline.py: baseline (per-band statistics, logistic regression fitted in closed form)
- head.py:    head (over the pretrained musicnn embedding, optionally beside the baseline's
              statistics: the baseline's regression, fitted before training, plus dropout and one
              dense layer trained from it)

Not in the registry: tagger.py, the pretrained musicnn tagger as a model that labels and embeds
with no training (the model path `musicnn`), behind the `Labeller` interface a GenreNet also meets.

Every network normalises each input with statistics of the training split (buffers, so that an
exported model carries them), and exposes `outputs` (the logits and the penultimate layer, the
embedding). Adding a model is one new module that calls `register`, imported below.
"""

from mgc.models.base import (  # noqa: F401
    ARCHITECTURES,
    Architecture,
    GenreNet,
    Labeller,
    ModelConfig,
    architecture,
    build,
    for_inference,
    reads,
    register,
)

# Registration, in the order --help lists the models.
# isort: off
from mgc.models import baseline, cnn, lstm, residual, cnn1d, mm_crnn, head  # noqa: F401, E402
# isort: on

MODELS = tuple(ARCHITECTURES)
