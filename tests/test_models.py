"""The networks themselves: the inference form computes the same function as the trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgc.models import MODELS, ModelConfig, build, for_inference


@pytest.mark.parametrize("name", MODELS)
def test_inference_form_gives_the_trained_models_outputs(name):
    torch.manual_seed(0)
    bands = 20 if name == "lstm" else 32
    model = build(ModelConfig(name=name, n_bands=bands, n_frames=24, channels=(4, 8), dense=(16, 8), lstm_units=(8, 8) if name != "crnn" else (8,)))
    with torch.no_grad():  # batch-norm statistics that are not the identity, as after training
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    model.eval()
    fast = for_inference(model)
    x = torch.randn(6, bands, 24)
    with torch.inference_mode():
        assert torch.allclose(fast(x), model(x), atol=1e-5)
        assert torch.allclose(fast.embed(x), model.embed(x), atol=1e-5)
    folded = sum(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())
    assert folded == 0, "every batch norm follows a convolution and is folded into it"
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == (name != "lstm"), "the trained model is left as it was"


def test_predictor_runs_an_artifact_in_steps_like_the_model(tmp_path):
    """Labelling and embedding go through Predictor: float16 features in steps of a few
    segments give the trained model's float32 outputs for every segment, in order."""
    from mgc import artifact
    from mgc.features import FeatureConfig
    from mgc.inference import CPU_SEGMENTS_PER_STEP, Predictor

    torch.manual_seed(1)
    fcfg = FeatureConfig(n_mels=32)
    model = build(ModelConfig(n_bands=32, n_frames=fcfg.frames, channels=(4, 8), dense=(16, 8), n_classes=3), mean=torch.randn(32), std=torch.rand(32) + 0.5).eval()
    artifact.save(str(tmp_path / "model"), model, fcfg, ["a", "b", "c"])
    x = torch.randn(3 * CPU_SEGMENTS_PER_STEP + 1, 32, fcfg.frames).half()
    logprobs, emb = Predictor.load(str(tmp_path / "model"))(x.numpy())
    with torch.inference_mode():
        ref_h = model.embed(x.float())
        ref_lp = torch.log_softmax(model.head.out(ref_h), 1)
    assert logprobs.shape == (len(x), 3) and emb.shape == (len(x), 8)
    assert np.allclose(logprobs, ref_lp.numpy(), atol=1e-4) and np.allclose(emb, ref_h.numpy(), atol=1e-4)
