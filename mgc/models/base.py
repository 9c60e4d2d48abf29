"""The registry, the model config, the shared network around every encoder, and the inference form."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol, TypeVar

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from mgc import inputs as input_kinds
from mgc.augment import Augment
from mgc.errors import MgcError
from mgc.features import FeatureConfig
from mgc.models.blocks import Head, Normalise


@dataclass(frozen=True)
class Architecture:
    """A registered network: `encoder(cfg, gaps)` maps the normalised inputs {name: tensor} to one
    vector per segment (its `size` attribute), `gaps` being the dropout rates between stacked LSTMs."""

    name: str
    about: str  # one line for --help
    reads: tuple[tuple[str, ...], ...]  # the input sets it can read; the first is its default
    encoder: Callable[..., nn.Module]
    defaults: dict[str, Any]  # channels, kernel, dense, lstm_units
    lstm: bool = False  # a stack of LSTMs, with a dropout layer between each two
    # Fitted in closed form instead of by the training loop: fit(net, training split as a Ray
    # Dataset, multilabel) -> {"train_loss": ...} (the baseline).
    fit: Callable[..., dict[str, float]] | None = None
    # Fitted the same way before the training loop, into a linear path from the encoder's vector to
    # the logits (`GenreNet.skip`, never trained) beside the dense head, whose output starts at zero:
    # training starts from the closed-form model and learns what it misses (the transfer head).
    start: Callable[..., dict[str, float]] | None = None


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Make `arch` a model of the registry (its family module calls this when imported)."""
    ARCHITECTURES[arch.name] = arch
    return arch


def architecture(name: str) -> Architecture:
    """The registered architecture `name`; MgcError listing the models otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise MgcError(f"unknown model {name!r}; choose one of {', '.join(ARCHITECTURES)}") from None


def _readable(arch: Architecture, names: tuple[str, ...]) -> tuple[str, ...]:
    if names not in arch.reads:
        raise MgcError(
            f"{arch.name} cannot read {'+'.join(names)}; it reads {' or '.join('+'.join(r) for r in arch.reads)}"
        )
    return names


def reads(name: str, chosen: str = "") -> tuple[str, ...]:
    """The inputs model `name` reads: its own, or `chosen` (--input, several joined by '+')
    where it can read that."""
    arch = architecture(name)
    return _readable(arch, tuple(chosen.split("+")) if chosen else arch.reads[0])


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, inputs and sizes; Tune searches `dropout`. Empty sizes and inputs take the
    architecture's own; `shapes` (one per input) come from the FeatureConfig (its defaults if empty)."""

    name: str = "cnn"
    n_classes: int = 8
    inputs: tuple[str, ...] = ()
    shapes: tuple[tuple[int, ...], ...] = ()
    channels: tuple[int, ...] = ()
    kernel: int = 0
    dense: tuple[int, ...] = ()
    lstm_units: tuple[int, ...] = field(default=())
    # One rate shared by every dropout layer, or one per layer in the order of `dropout_layers`.
    dropout: float | tuple[float, ...] = 0.3

    def __post_init__(self) -> None:
        arch = architecture(self.name)
        for k, v in arch.defaults.items():
            if not getattr(self, k):
                object.__setattr__(self, k, v)
        if arch.fit:  # its head is the fitted linear model, whatever sizes a comparison passes
            object.__setattr__(self, "dense", ())
        object.__setattr__(self, "inputs", _readable(arch, tuple(self.inputs) or arch.reads[0]))
        if not self.shapes:
            object.__setattr__(self, "shapes", tuple(input_kinds.get(n).shape(FeatureConfig()) for n in self.inputs))
        if len(self.shapes) != len(self.inputs):
            raise MgcError(f"{self.name}: {len(self.inputs)} inputs but {len(self.shapes)} shapes")
        rates = self.dropout_rates
        if len(rates) != len(self.dropout_layers):
            raise MgcError(
                f"{self.name} has {len(self.dropout_layers)} dropout layers ({', '.join(self.dropout_layers)}), "
                f"but {len(rates)} rates were given"
            )
        if not all(0 <= r < 1 for r in rates):
            raise MgcError(f"dropout {self.dropout} is outside [0, 1)")
        with torch.device("meta"):  # sizes that do not fit the inputs fail here, before any work: no memory, no compute
            encoder = arch.encoder(self, rates[:-1])
            try:
                out = encoder({n: torch.empty(2, *shape) for n, shape in zip(self.inputs, self.shapes)})
            except RuntimeError as e:
                raise MgcError(
                    f"{self.name}: its sizes do not fit its inputs {dict(zip(self.inputs, self.shapes))} "
                    f"({str(e).splitlines()[0]})"
                ) from None
        if tuple(out.shape) != (2, encoder.size):
            raise MgcError(
                f"{self.name}: --kernel {self.kernel} gives {out.shape[1]} features where the head expects "
                f"{encoder.size}: use an odd kernel"
            )

    @property
    def architecture(self) -> Architecture:
        return architecture(self.name)

    @property
    def dropout_layers(self) -> tuple[str, ...]:
        """Names of the dropout layers, in order: between stacked LSTMs, then the head's input."""
        stacked = len(self.lstm_units) if self.architecture.lstm else 0
        return tuple(f"lstm{i}" for i in range(1, stacked)) + ("head",)

    @property
    def dropout_rates(self) -> tuple[float, ...]:
        """One rate per dropout layer."""
        if isinstance(self.dropout, (int, float)):
            return (float(self.dropout),) * len(self.dropout_layers)
        return tuple(float(r) for r in self.dropout)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.shapes[self.inputs.index(name)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        d = dict(d)
        for k in ("channels", "dense", "lstm_units", "dropout", "inputs"):
            if isinstance(d.get(k), list):
                d[k] = tuple(d[k])
        if "shapes" in d:
            d["shapes"] = tuple(tuple(s) for s in d["shapes"])
        return cls(**d)


class _Reads(Protocol):
    @property
    def inputs(self) -> tuple[str, ...]: ...


class _Embeds(Protocol):
    @property
    def embedding_size(self) -> int: ...


class Labeller(Protocol):
    """What labelling, embedding and validation use of a model (mgc.artifact.load gives one,
    mgc.inference.Predictor runs one): a trained GenreNet, or the pretrained tagger
    (mgc.models.tagger.Tagger). Both are torch modules."""

    @property
    def cfg(self) -> _Reads:
        """Its config: `inputs`, the names of the inputs it reads."""
        ...

    @property
    def head(self) -> _Embeds:
        """Its head: `embedding_size`, the width of the embedding."""
        ...

    def outputs(self, x: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding) of a batch of inputs {name: [batch, *shape]}."""
        ...


class GenreNet(nn.Module):
    """Any registered encoder between the inputs' normalisation and the shared dense head."""

    def __init__(self, cfg: ModelConfig, norm: dict[str, tuple[Any, Any]] | None = None):
        super().__init__()
        self.cfg = cfg
        self.norm = nn.ModuleDict(
            {
                n: Normalise(input_kinds.get(n).stats_size(shape), *(norm or {}).get(n, (None, None)))
                for n, shape in zip(cfg.inputs, cfg.shapes)
            }
        )
        *gaps, head_rate = cfg.dropout_rates
        self.encoder = cfg.architecture.encoder(cfg, tuple(gaps))
        self.head = Head(self.encoder.size, cfg.dense, cfg.n_classes, head_rate)
        self.skip: nn.Linear | None = None
        if cfg.architecture.start:
            self.skip = nn.Linear(self.encoder.size, cfg.n_classes).requires_grad_(False)
            nn.init.zeros_(self.head.out.weight)
            nn.init.zeros_(self.head.out.bias)

    def encode(self, x: dict[str, torch.Tensor], augment: Augment | None = None) -> torch.Tensor:
        """{input: [batch, *shape]} features -> [batch, n] vector before the head; `augment` is the
        training loop's (each input kind's augmentation of its normalised input), never given
        elsewhere."""
        z = {n: self.norm[n](x[n]) for n in self.cfg.inputs}
        if augment:
            z = {n: input_kinds.get(n).augment(v, augment, augment.gen) for n, v in z.items()}
        return self.encoder(z)

    def outputs(self, x: dict[str, torch.Tensor], augment: Augment | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, embedding): the embedding is the penultimate layer, used for recommendations."""
        z = self.encode(x, augment)
        h = self.head.hidden(z)
        logits = self.head.out(h)
        return (logits if self.skip is None else logits + self.skip(z)), h

    def load_start(self, start: dict[str, Any]) -> None:
        """Load a closed-form start (train.Prepared.start: arrays by state-dict key); every key must
        be one of this network's."""
        missing = self.load_state_dict({k: torch.as_tensor(v) for k, v in start.items()}, strict=False).missing_keys
        if set(start) - set(self.state_dict()) or set(start) & set(missing):
            raise MgcError(f"{self.cfg.name}: its start {sorted(start)} does not fit the network")

    def complete(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """`state` with a linear path of zeros and an identity scale where it has none: a network
        saved without a closed-form start computes the same function so."""
        if self.skip is None or "skip.weight" in state:
            return state
        identity = {"skip.weight": torch.zeros_like(self.skip.weight), "skip.bias": torch.zeros_like(self.skip.bias)}
        return {
            **identity,
            **{k: v for k, v in Normalise(self.encoder.size).state_dict(prefix="encoder.scale.").items()},
            **state,
        }

    def forward(self, x: dict[str, torch.Tensor], augment: Augment | None = None) -> torch.Tensor:
        return self.outputs(x, augment)[0]


def build(cfg: ModelConfig, norm: dict[str, tuple[Any, Any]] | None = None) -> GenreNet:
    """The network named by cfg.name; `norm` gives each input's (mean, std) statistics."""
    return GenreNet(cfg, norm)


_FUSABLE = ((nn.Conv1d, nn.BatchNorm1d), (nn.Conv2d, nn.BatchNorm2d))


_Module = TypeVar("_Module", bound=nn.Module)


def for_inference(model: _Module) -> _Module:
    """An eval-mode copy that computes the same function faster: each batch norm folded into the
    1-D or 2-D convolution before it, and channels-last memory for the 2-D convolutions (faster
    on CPU: bench/README.md, "Labelling")."""
    model = copy.deepcopy(model).eval()
    for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if any(isinstance(seq[i], conv) and isinstance(seq[i + 1], bn) for conv, bn in _FUSABLE):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), nn.Identity()
    return model.to(memory_format=torch.channels_last)
