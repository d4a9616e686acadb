"""sentencemim: SentenceMIM (sMIM), sVAE and AE sentence auto-encoders on PyTorch.

The top-level names are imported on first use (PEP 562 module __getattr__), so that
`import sentencemim.cli` -- and with it `smim --help` -- does not import torch.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {  # name -> the submodule that defines it
    "ModelConfig": "config", "TrainConfig": "config", "ReportConfig": "config",
    "UserError": "errors",
    "SentenceAE": "model",
    "Vocab": "vocab",
    "SentenceMIM": "api",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
