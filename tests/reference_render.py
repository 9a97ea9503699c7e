"""SPEC's render_conversation written plainly over tiktoken: the oracle for
rendering (and, through ``reference_generators``, for packing). Nothing here
runs convpack code."""

from __future__ import annotations

CHAT_SPECIAL_TOKENS = (
    "<|bos|>", "<|user_start|>", "<|user_end|>", "<|assistant_start|>", "<|assistant_end|>",
    "<|python_start|>", "<|python_end|>", "<|output_start|>", "<|output_end|>",
)


class ReferenceRenderer:
    """SPEC's render_conversation, written plainly over tiktoken."""

    def __init__(self, enc):
        self.enc = enc
        self.special = {name: enc.encode_single_token(name) for name in CHAT_SPECIAL_TOKENS}

    def render(self, conversation, max_tokens=2048):
        s = self.special
        messages = conversation["messages"]
        roles = [m["role"] for m in messages]
        start = 1 if roles and roles[0] == "system" else 0
        expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles) - start)]
        if not roles or roles[start:] != expected:
            raise ValueError(f"bad roles {roles}")
        if start:
            first_user = dict(messages[1])
            first_user["content"] = messages[0]["content"] + "\n\n" + messages[1]["content"]
            messages = [first_user, *messages[2:]]
        ids, mask = [s["<|bos|>"]], [0]

        def add(tokens, m):
            ids.extend(tokens)
            mask.extend([m] * len(tokens))

        for message in messages:
            content = message["content"]
            if message["role"] == "user":
                if not isinstance(content, str):
                    raise ValueError("user content must be a string")
                add([s["<|user_start|>"], *self.enc.encode_ordinary(content), s["<|user_end|>"]], 0)
                continue
            add([s["<|assistant_start|>"]], 0)
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            for part in parts:
                body = self.enc.encode_ordinary(part["text"])
                if part["type"] == "text":
                    add(body, 1)
                elif part["type"] == "python":
                    add([s["<|python_start|>"], *body, s["<|python_end|>"]], 1)
                else:
                    add([s["<|output_start|>"], *body, s["<|output_end|>"]], 0)
            add([s["<|assistant_end|>"]], 1)
        return ids[:max_tokens], mask[:max_tokens]

    def render_for_completion(self, conversation, max_tokens=2048):
        trimmed = {"messages": conversation["messages"][:-1]}
        ids, _ = self.render(trimmed, max_tokens)
        return [*ids, self.special["<|assistant_start|>"]]
