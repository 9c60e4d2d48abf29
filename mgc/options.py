"""Options declared once. Each config field carries its help, its range and its choices
(`option`); from them come the command line's flags (`add_options`, `from_args`), their parsing
(`parse_type`) and the checks every config runs when it is built (`validate`), as scikit-learn's
declared parameter constraints. Nothing here imports Ray or torch: the CLI builds its parser
before either starts."""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable

from mgc.errors import MgcError

Registry = tuple[Callable[[str], str], str]  # a parser of one name, and the names with what each is


@dataclass(frozen=True)
class Range:
    """A numeric interval; None: unbounded. `low_in`/`high_in`: whether the bound is allowed."""

    low: float | None = None
    high: float | None = None
    low_in: bool = True
    high_in: bool = True

    def __contains__(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        lo, hi = self.low, self.high
        return (lo is None or value > lo or (value == lo and self.low_in)) and (
            hi is None or value < hi or (value == hi and self.high_in)
        )

    def __str__(self) -> str:
        parts = [f"{'at least' if self.low_in else 'above'} {self.low:g}"] if self.low is not None else []
        parts += [f"{'at most' if self.high_in else 'below'} {self.high:g}"] if self.high is not None else []
        return " and ".join(parts)


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    low: float | None = None,
    above: float | None = None,
    high: float | None = None,
    below: float | None = None,
    choices: tuple[str, ...] | None = None,
    registry: str = "",
    metavar: str | None = None,
    empty: str = "none",
    factory: Callable[[], Any] | None = None,
) -> Any:
    """A config field with its help text and constraints: `low`/`high` are inclusive bounds,
    `above`/`below` exclusive ones; `choices` the allowed strings; `registry` names the registry
    whose names each item must be (resolved by whoever builds the parser: `add_options`); `empty`
    what an empty list means, for --help."""
    rng = None
    if (low, above, high, below) != (None,) * 4:
        rng = Range(low if above is None else above, high if below is None else below, above is None, below is None)
    meta = {"help": help, "range": rng, "choices": choices, "registry": registry, "metavar": metavar, "empty": empty}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def flag(name: str) -> str:
    """The command-line spelling of a field."""
    return f"--{name.replace('_', '-')}"


def validate(cfg: Any) -> None:
    """Refuse, as one MgcError naming the option, any field of `cfg` outside its declared range or
    choices (items of a tuple each; None always passes)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        rng, choices = f.metadata.get("range"), f.metadata.get("choices")
        for v in value if isinstance(value, tuple) else (value,):
            if v is None:
                continue
            if rng is not None and v not in rng:
                raise MgcError(f"{flag(f.name)} {v:g} is out of range: must be {rng}")
            if choices is not None and v not in choices:
                raise MgcError(f"unknown {flag(f.name)} {v!r}; choose one of {', '.join(choices)}")


def parse_type(kind: type, rng: Range | None) -> Callable[[str], Any]:
    """An argparse type: `kind`, refused with one line when outside `rng`."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if rng is not None and value not in rng:
            raise argparse.ArgumentTypeError(f"{text} is out of range: must be {rng}")
        return value

    parse.limits = rng  # type: ignore[attr-defined]
    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _item_type(kind: type, rng: Range | None, registry: Callable[[str], str] | None) -> Callable[[str], Any]:
    if kind in (int, float):
        return parse_type(kind, rng)
    return registry or kind


def _tuple_type(
    tup: type, scalar: type | None, rng: Range | None, registry: Callable[[str], str] | None
) -> Callable[[str], Any]:
    """Comma-separated items; a field that is a scalar or a tuple takes either."""
    item = _item_type(typing.get_args(tup)[0], rng, registry)
    one = scalar and _item_type(scalar, rng, None)

    def parse(text: str):
        if one is not None and "," not in text:
            return one(text)
        return tuple(item(x) for x in text.split(",") if x)

    parse.limits = getattr(item, "limits", None)  # type: ignore[attr-defined]
    return parse


def _argument(f: dataclasses.Field, kind: Any, registries: dict[str, Registry]) -> dict[str, Any]:
    """argparse keywords for one field: bools are flags, tuples comma-separated, optionals take
    their inner type; the help ends with the default."""
    meta, text, registry = f.metadata, f.metadata.get("help", ""), None
    rng = meta.get("range")
    if meta.get("registry"):
        registry, about = registries[meta["registry"]]
        text = f"{text}, {about}"
    extra = {"metavar": meta["metavar"]} if meta.get("metavar") else {}
    union = typing.get_origin(kind) in (typing.Union, types.UnionType)
    kinds = typing.get_args(kind) if union else (kind,)
    tup = next((t for t in kinds if typing.get_origin(t) is tuple), None)
    if kind is bool:
        return {"action": "store_true", "help": f"{text} (a flag)"}
    if tup is not None:
        scalar = next((t for t in kinds if t not in (tup, type(None))), None)
        shown = ",".join(map(str, f.default)) or meta["empty"] if isinstance(f.default, tuple) else f.default
        return {
            "type": _tuple_type(tup, scalar, rng, registry),
            "default": f.default,
            "help": f"{text} (comma-separated; default: {shown})",
            **extra,
        }
    base = next((t for t in kinds if t is not type(None)), kind)
    base = _item_type(base, rng, registry)
    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
        return {"type": base, "required": True, "help": f"{text} (required)", **extra}
    shown = f" (default: {f.default})" if f.default != "" else ""
    return {"type": base, "default": f.default, "help": text + shown, **extra}


def add_options(
    parser: argparse.ArgumentParser,
    cls: type,
    title: str,
    skip: tuple[str, ...] = (),
    registries: dict[str, Registry] | None = None,
) -> None:
    """One option per field of the config dataclass `cls` (less `skip`), in a group of --help;
    `registries` resolve the fields that name registry entries: a parser of one name, and what
    the registry holds, for the help."""
    group = parser.add_argument_group(title)
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name not in skip:
            group.add_argument(flag(f.name), **_argument(f, hints[f.name], registries or {}))


def from_args(cls: type, args: argparse.Namespace, skip: tuple[str, ...] = (), **given: Any) -> Any:
    """`cls` from the parsed options: every field the parser holds, less `skip`, `given` as passed."""
    names = {f.name for f in dataclasses.fields(cls)} - set(skip) - set(given)
    return cls(**{k: getattr(args, k) for k in names}, **given)
