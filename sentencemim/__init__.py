"""sentencemim: SentenceMIM (sMIM), sVAE and AE sentence auto-encoders on PyTorch."""

__version__ = "0.1.0"

from .config import ModelConfig, TrainConfig  # noqa: E402
from .errors import UserError  # noqa: E402
from .model import SentenceAE  # noqa: E402
from .vocab import Vocab  # noqa: E402
from .api import SentenceMIM  # noqa: E402
