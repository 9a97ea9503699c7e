"""Chat formats: how a conversation becomes text with a loss mask.

A chat format is a value the renderer takes: :data:`NANOCHAT` (nanochat's
special tokens, the default for nanochat vocabularies) or a
:class:`ChatTemplate` (a model's Jinja ``chat_template``, rendered in Rust).
``Tokenizer.render_conversation``, ``render_conversations``,
``render_for_completion``, ``DataGenerator`` and the CLI take one as
``chat_format=``; the packers never learn which one made a conversation.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Optional, Union

from . import _core

__all__ = ["ChatTemplate", "NanochatFormat", "NANOCHAT", "ChatFormat", "resolve_chat_format"]

_TRAIN_ON = ("all", "last")


class NanochatFormat:
    """nanochat's chat format (``<|user_start|>`` ... ``<|assistant_end|>``,
    masks as in SPEC's table)."""

    def __repr__(self) -> str:
        return "NANOCHAT"


#: nanochat's chat format.
NANOCHAT = NanochatFormat()


class ChatTemplate:
    """A Jinja chat template (Hugging Face's ``chat_template``) as a chat format.

    The template is rendered in Rust as ``transformers`` renders it
    (``trim_blocks``, ``lstrip_blocks``, ``raise_exception``,
    ``strftime_now``, ``tojson``, loop controls, Python string methods) and
    the whole text is encoded with the tokenizer's special tokens
    recognised, so ids equal ``apply_chat_template(..., tokenize=True)``.
    Conversations are ``{"messages": [...], "tools": [...]}`` (``tools``
    optional) with roles ``system``, ``user``, ``assistant`` and ``tool``;
    other message fields (``tool_calls``, ``reasoning_content``, ...) reach
    the template as they are.

    The loss mask marks what each assistant message's content produced in
    the template's output (found by rendering with sentinel contents, never
    from markers the template may lack); where the template has
    ``{% generation %}`` blocks, those blocks (as ``transformers``'
    ``return_assistant_tokens_mask``). System, user and tool messages are
    never trained on.

    Args:
        template: the Jinja source.
        bos_token, eos_token: the template's ``bos_token`` / ``eos_token``.
        name: names the template in errors (default ``"chat_template"``).
        train_on: ``"all"`` assistant messages or only the ``"last"``; a
            message's own ``"train": True/False`` overrides either.
        train_end_of_turn: also train on the special token that ends an
            assistant message (e.g. ``<|im_end|>``, ``<|eot_id|>``).
        **variables: more variables the template reads (e.g.
            ``enable_thinking=False``).

    Raises:
        ValueError: the template does not compile, or a bad argument.
    """

    def __init__(
        self,
        template: str,
        *,
        bos_token: Optional[str] = None,
        eos_token: Optional[str] = None,
        name: str = "chat_template",
        train_on: str = "all",
        train_end_of_turn: bool = True,
        **variables: Any,
    ) -> None:
        if not isinstance(template, str):
            raise TypeError(f"template must be a str, got {type(template).__name__}")
        if train_on not in _TRAIN_ON:
            raise ValueError(f"train_on must be one of {_TRAIN_ON}, got {train_on!r}")
        if not isinstance(train_end_of_turn, bool):
            raise TypeError("train_end_of_turn must be a bool")
        values = dict(variables)
        if bos_token is not None:
            values["bos_token"] = bos_token
        if eos_token is not None:
            values["eos_token"] = eos_token
        self.template = template
        self.name = name
        self.train_on = train_on
        self.train_end_of_turn = train_end_of_turn
        self.variables = values
        self._core = _core.ChatTemplate(
            template, name=name, variables=values, train_on=train_on,
            end_of_turn=train_end_of_turn,
        )

    @property
    def has_generation_markers(self) -> bool:
        """Whether the template marks assistant text with ``{% generation %}``."""
        return self._core.has_generation_markers

    @property
    def identity(self) -> dict:
        """What a rendering with this format depends on, as JSON values
        (rendered shards are keyed by it)."""
        return {
            "template_sha256": hashlib.sha256(self.template.encode()).hexdigest(),
            "train_on": self.train_on,
            "train_end_of_turn": self.train_end_of_turn,
            "variables": json.loads(json.dumps(self.variables, sort_keys=True, default=repr)),
        }

    def with_policy(self, *, train_on: Optional[str] = None,
                    train_end_of_turn: Optional[bool] = None) -> ChatTemplate:
        """The same template with another mask policy."""
        return ChatTemplate(
            self.template, name=self.name,
            train_on=self.train_on if train_on is None else train_on,
            train_end_of_turn=(self.train_end_of_turn if train_end_of_turn is None
                               else train_end_of_turn),
            **self.variables,
        )

    def __repr__(self) -> str:
        return f"ChatTemplate(name={self.name!r}, train_on={self.train_on!r}, " \
               f"train_end_of_turn={self.train_end_of_turn})"


ChatFormat = Union[NanochatFormat, ChatTemplate, str, None]


def format_identity(template: Optional[ChatTemplate]) -> Any:
    """The identity of a resolved format: ``"nanochat"`` or the template's."""
    return "nanochat" if template is None else template.identity


def template_for(tokenizer: Any, source: str, name: str = "chat_template") -> ChatTemplate:
    """``source`` as a template of ``tokenizer``: given its ``bos_token``,
    ``eos_token``, ``pad_token`` and ``unk_token`` (its
    ``special_token_roles``, when it has them).

    Raises:
        ValueError: the template does not compile.
    """
    roles = getattr(tokenizer, "special_token_roles", None) or {}
    kwargs = {k: roles[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")
              if isinstance(roles.get(k), str)}
    for short in ("bos", "eos", "pad", "unk"):
        if isinstance(roles.get(short), str):
            kwargs.setdefault(f"{short}_token", roles[short])
    return ChatTemplate(source, name=name, **kwargs)


def resolve_chat_format(tokenizer: Any, chat_format: ChatFormat) -> Optional[ChatTemplate]:
    """The template to render with, or ``None`` for nanochat's format.

    ``None`` means the tokenizer's default: its ``chat_template`` attribute
    (a tokenizer read from a Hugging Face directory) when set, with its
    ``special_token_roles`` as ``bos_token``/``eos_token``; else nanochat's
    format. A str is a template's source.
    """
    if chat_format is None:
        source = getattr(tokenizer, "chat_template", None)
        if not source:
            return None
        cache = tokenizer.__dict__.setdefault("_chat_template_cache", {})
        if source not in cache:
            cache[source] = template_for(tokenizer, source)
        return cache[source]
    if isinstance(chat_format, NanochatFormat):
        return None
    if isinstance(chat_format, ChatTemplate):
        return chat_format
    if isinstance(chat_format, str):
        if chat_format == "nanochat":
            return None
        return ChatTemplate(chat_format)
    raise TypeError(
        f"chat_format must be convpack.NANOCHAT, a convpack.ChatTemplate or a template str, "
        f"got {type(chat_format).__name__}"
    )
