"""The networks themselves, through the registries: every model builds for each input it can
read, the CLI offers it, and its inference form computes the same function as the trained model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mgc import inputs
from mgc.cli import build_parser
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.models import ARCHITECTURES, MODELS, ModelConfig, build, for_inference

# Shrunken sizes for every family: four stages, as the literature's, with few filters.
SMALL = {"channels": (4, 8, 8, 8), "dense": (16, 8), "kernel": 0}


def small(name: str, **kw) -> ModelConfig:
    arch = ARCHITECTURES[name]
    units = {"lstm_units": (8,) * len(arch.defaults["lstm_units"])} if arch.lstm else {}
    return ModelConfig(name=name, **{**SMALL, **units, **kw})


def _batch(cfg: ModelConfig, n: int = 5) -> dict[str, torch.Tensor]:
    return {name: torch.randn(n, *shape) for name, shape in zip(cfg.inputs, cfg.shapes)}


def test_every_registered_model_is_offered_and_builds_for_each_input_it_reads():
    helps = {
        c: p.format_help() for c, p in next(a for a in build_parser()._actions if a.dest == "command").choices.items()
    }
    assert list(MODELS) == [
        "baseline",
        "cnn",
        "cnn_lstm",
        "cnn_bilstm",
        "lstm",
        "crnn",
        "resnet2d",
        "cnn1d",
        "mm_crnn",
        "head",
    ]
    fcfg = FeatureConfig(inputs=tuple(inputs.INPUTS))
    for name, arch in ARCHITECTURES.items():
        for command in ("train", "compare", "tune"):
            assert f"  {name} " in helps[command], (command, name)
        for names in arch.reads:
            cfg = small(name, inputs=names, shapes=tuple(inputs.get(n).shape(fcfg) for n in names))
            out = build(cfg).eval()(_batch(cfg, 2))
            assert out.shape == (2, 8) and torch.isfinite(out).all(), (name, names)
    assert ARCHITECTURES["cnn"].reads == (("logmel",), ("mfcc",)) and ARCHITECTURES["mm_crnn"].reads == (
        ("waveform", "logmel"),
    )
    with pytest.raises(MgcError, match="cnn1d cannot read mfcc; it reads waveform"):
        small("cnn1d", inputs=("mfcc",))
    with pytest.raises(MgcError, match="4 pooling blocks leave no frequency bands of 13"):
        small("cnn", inputs=("mfcc",), shapes=((13, 130),))
    with pytest.raises(MgcError, match="use an odd kernel"):  # found on the meta device, before any work
        small("cnn", kernel=2)
    with pytest.raises(MgcError, match="resnet2d: its sizes do not fit its inputs"):
        small("resnet2d", kernel=4)


def test_the_dense_head_follows_the_inputs_shape():
    spectra = {n: small("cnn", inputs=(n,)) for n in ("logmel", "mfcc")}
    sizes = {n: build(c).encoder.size for n, c in spectra.items()}
    assert sizes == {"logmel": 8 * (128 >> 4) * (130 >> 4), "mfcc": 8 * (20 >> 4) * (130 >> 4)}


@pytest.mark.parametrize("name", MODELS)
def test_inference_form_gives_the_trained_models_outputs(name):
    torch.manual_seed(0)
    model = build(small(name))
    with torch.no_grad():  # batch-norm statistics that are not the identity, as after training
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 2)
                m.bias.uniform_(-1, 1)
    model.eval()
    fast = for_inference(model)
    x = _batch(model.cfg, 6)
    with torch.inference_mode():
        assert torch.allclose(fast(x), model(x), atol=1e-4)
        assert torch.allclose(fast.outputs(x)[1], model.outputs(x)[1], atol=1e-4)
    norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)
    assert not any(isinstance(m, norms) for m in fast.modules()), (
        "every batch norm follows a convolution and is folded into it"
    )
    assert any(isinstance(m, norms) for m in model.modules()) == (name not in ("lstm", "baseline", "head")), (
        "the trained model is left as it was"
    )


def test_predictor_runs_an_artifact_in_steps_like_the_model(tmp_path):
    """Labelling and embedding go through Predictor: float16 inputs in steps of a few segments
    give the trained model's float32 outputs for every segment, in order; each input has its own
    normalisation (per band for a spectrum, one for the waveform)."""
    from mgc import artifact
    from mgc.inference import CPU_SEGMENTS_PER_STEP, Predictor

    torch.manual_seed(1)
    fcfg = FeatureConfig(n_mels=32, inputs=("logmel", "waveform"))
    cfg = small("mm_crnn", n_classes=3, shapes=tuple(inputs.get(n).shape(fcfg) for n in ("waveform", "logmel")))
    norm = {"logmel": (torch.randn(32), torch.rand(32) + 0.5), "waveform": (torch.randn(1) * 0.01, torch.rand(1) + 0.1)}
    model = build(cfg, norm).eval()
    artifact.save(str(tmp_path / "model"), model, fcfg, ["a", "b", "c"])
    x = {n: v.half() for n, v in _batch(cfg, 3 * CPU_SEGMENTS_PER_STEP + 1).items()}
    logprobs, emb = Predictor.load(str(tmp_path / "model"))({n: v.numpy() for n, v in x.items()})
    with torch.inference_mode():
        ref_h = model.outputs({n: v.float() for n, v in x.items()})[1]
        ref_lp = torch.log_softmax(model({n: v.float() for n, v in x.items()}), 1)
    assert logprobs.shape == (len(x["logmel"]), 3) and emb.shape == (len(x["logmel"]), 8)
    assert np.allclose(logprobs, ref_lp.numpy(), atol=1e-4) and np.allclose(emb, ref_h.numpy(), atol=1e-4)
    assert model.norm["logmel"].mean.shape == (32,) and model.norm["waveform"].mean.shape == (1,)


def test_the_heads_start_loads_only_into_its_own_keys_and_an_older_head_still_loads():
    """A start with a key the network lacks is refused; a head state saved before the closed-form
    start (no linear path, no scale) loads as the same function: its hidden layer's output alone."""
    from mgc.errors import MgcError
    from mgc.models.baseline import summary

    torch.manual_seed(2)
    cfg = ModelConfig(name="head", n_classes=4)
    net = build(cfg).eval()
    with pytest.raises(MgcError, match="does not fit the network"):
        net.load_start({"skip.weight": torch.zeros(4, net.encoder.size), "skip.other": torch.zeros(1)})
    with torch.no_grad():
        net.head.out.weight.normal_()
    old = {k: v for k, v in net.state_dict().items() if not k.startswith(("skip.", "encoder.scale."))}
    loaded = build(cfg).eval()
    loaded.load_state_dict(loaded.complete(old))
    x = _batch(cfg, 5)
    with torch.no_grad():
        z = summary({n: net.norm[n](x[n]) for n in cfg.inputs})
        assert torch.allclose(loaded(x), net.head.out(net.head.hidden(z)), atol=1e-5)
