"""convpack: the fast data path for training chat language models.

Conversations in, training batches out: a Rust BPE tokenizer (ids identical
to tiktoken's), conversation rendering with loss masks, and packers that
fill batches for PyTorch.
"""

from . import _core
from .chat_format import NANOCHAT, ChatTemplate
from .errors import ConversationError, TemplateError, UnknownSpecialTokenError, VocabularyError
from .sources import SourceResumeError
from .texts import conversation_texts
from .tokenizer import CHAT_SPECIAL_TOKENS, CL100K_PATTERN, SPLIT_PATTERN, Tokenizer

__version__: str = _core.__version__


def __getattr__(name: str):
    # DataGenerator (and its warning) load the packer and, for tensor output,
    # torch: import them only when asked for, so the tokenizer alone stays
    # quick to import.
    if name in ("RenderedDataset", "render_shards"):
        from . import shards

        return getattr(shards, name)
    if name in ("DataGenerator", "NoSupervisedTokensWarning"):
        from . import datagen

        return getattr(datagen, name)
    raise AttributeError(f"module 'convpack' has no attribute {name!r}")

__all__ = [
    "CHAT_SPECIAL_TOKENS",
    "ChatTemplate",
    "CL100K_PATTERN",
    "ConversationError",
    "DataGenerator",
    "NANOCHAT",
    "NoSupervisedTokensWarning",
    "RenderedDataset",
    "SPLIT_PATTERN",
    "SourceResumeError",
    "TemplateError",
    "Tokenizer",
    "UnknownSpecialTokenError",
    "VocabularyError",
    "__version__",
    "conversation_texts",
    "render_shards",
]
