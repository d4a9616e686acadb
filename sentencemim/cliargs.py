"""Command-line building blocks shared by every `smim` subcommand (no torch imported here,
so `smim --help` and argument errors answer at once).

    Parser          an ArgumentParser whose errors are one line: `smim SUB: error: ...`, exit 2
    config_flags    one flag per dataclass field, help / choices / range from the field's metadata
    number          an argparse type for a plain numeric flag: finite, in range, checked at parse time

A module that adds subcommands exposes `register(sub)` and imports its heavy modules
inside the command functions, e.g.

    def register(sub):
        p = sub.add_parser("curves", help="...")
        p.add_argument("--smooth", type=number(float, ge=0), default=0.0, help="...")
        p.set_defaults(func=cmd_curves)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from types import SimpleNamespace

from .config import _kind, problem


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): a person sees what is wrong at once."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parse(kind: str, spec, flag_kind_name: str):
    def parse(text: str):
        if kind == "int":
            try:
                value = int(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        elif kind == "float":
            try:
                value = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        else:
            value = text
        p = problem(spec, value)
        if p:
            raise argparse.ArgumentTypeError(p)
        return value
    parse.__name__ = flag_kind_name
    parse.spec = spec  # the checked range, for the tests that try every flag
    return parse


def field_type(f):
    """The argparse type of a config field: parses, then checks type, finiteness and range."""
    kind = _kind(f)
    return _parse(kind, f, kind)


def number(kind, ge=None, gt=None, le=None, lt=None):
    """An argparse type for an int or float flag that is not a config field."""
    name = kind.__name__ if isinstance(kind, type) else str(kind)
    spec = SimpleNamespace(type=name, metadata={"choices": None, "ge": ge, "gt": gt, "le": le, "lt": lt,
                                                "device": False})
    return _parse(name, spec, name)


def device_type(text: str) -> str:
    """--device: syntax checked at parse time; availability when the command runs."""
    from .config import DEVICE_HELP, DEVICE_RE
    if not DEVICE_RE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"must be {DEVICE_HELP}; got {text!r}")
    return text


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def config_flags(p, cls, skip=(), defaults_from_config: bool = False, title: str | None = None) -> None:
    """One flag per field of dataclass `cls` (hidden fields and `skip` left out). The help
    text, choices and range come from the field's metadata. With `defaults_from_config`
    the flag's default is the field's; otherwise None, so explicit values can be told apart."""
    g = p.add_argument_group(title) if title else p
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("hidden"):
            continue
        m = f.metadata
        default = f.default
        kw = {"dest": f.name, "default": default if defaults_from_config else None,
              "help": f"{m.get('help', '')} (default: {default})"}
        if _kind(f) == "bool":  # a switch: --tensorboard (argparse's type=bool would read "False" as True)
            kw.update(action="store_const", const=True, help=f"{m.get('help', '')} (a switch; default: off)")
        elif m.get("choices"):
            kw["choices"] = m["choices"]
        else:
            kw["type"] = field_type(f)
            kw["metavar"] = {"int": "N", "float": "X"}.get(_kind(f), f.name.upper())
        g.add_argument(flag(f.name), **kw)


def explicit(args, cls, skip=()) -> dict:
    """The config values given on the command line (flags left at None are not)."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
            if f.name not in skip and getattr(args, f.name, None) is not None}


def note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)
