"""Chat templates: ids against transformers' apply_chat_template on twin
tokenizers, masks against references written here from each format's rules
(and against HF's own mask where the template has generation markers)."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import template_fixtures as tf  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import convpack  # noqa: E402
from convpack import ChatTemplate, TemplateError  # noqa: E402

# ChatML as Qwen writes it: earlier assistant turns lose their <think> block.
QWEN = (
    "{% for message in messages %}"
    "{% if message.role == 'assistant' %}"
    "{% set content = message.content %}"
    "{% if not loop.last and '</think>' in content %}"
    "{% set content = content.split('</think>')[-1].lstrip('\\n') %}"
    "{% endif %}"
    "{{ '<|im_start|>assistant\\n' + content + '<|im_end|>\\n' }}"
    "{% else %}"
    "{{ '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>\\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)
GEMMA = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first = messages[0]['content'] + '\\n\\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{% endif %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\\n' + (first if loop.first else '') + message['content'] | trim + '<end_of_turn>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}"
    "{% endfor %}"
)
GENERATION = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ message['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\\n' }}"
    "{% endfor %}"
)
TOOLS = (
    "{% if tools %}<|im_start|>system\n# Tools\n{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if message.content %}{{ message.content }}{% endif %}"
    "{% for call in message.tool_calls or [] %}<tool_call>\n{{ {'name': call.function.name, 'arguments': call.function.arguments} | tojson }}\n</tool_call>{% endfor %}"
    "<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response><|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
)


@pytest.fixture(scope="session")
def twins(tmp_path_factory):
    ours, hf_path = tf.twins(str(tmp_path_factory.mktemp("hf")))
    return ours, hf_path


def hf_ids(hf, messages, **kw):
    out = hf.apply_chat_template(messages, tokenize=True, **kw)
    if isinstance(out, dict) or hasattr(out, "keys"):  # transformers 5: a BatchEncoding
        out = out["input_ids"]
    return list(out)


def char_mask(hf, text, spans):
    """1 for each token whose characters overlap a span (HF's offsets)."""
    enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
    return [int(any(s < e2 and s2 < e for s2, e2 in spans)) for s, e in enc["offset_mapping"]], enc["input_ids"]


# ------------------------------------------------ references, format by format

def ref_chatml(messages, eot=True, last_only=False, strip_think=True):
    text, spans = "", []
    n_asst = [i for i, m in enumerate(messages) if m["role"] == "assistant"]
    for i, m in enumerate(messages):
        if m["role"] == "assistant":
            c = m["content"]
            if strip_think and i != len(messages) - 1 and "</think>" in c:
                c = c.split("</think>")[-1].lstrip("\n")
            text += "<|im_start|>assistant\n"
            start = len(text)
            text += c
            end = len(text) + (len("<|im_end|>") if eot else 0)
            text += "<|im_end|>\n"
            train = m.get("train", (not last_only) or i == n_asst[-1])
            if train and end > start:
                spans.append((start, end))
        else:
            text += f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
    return text, spans


def ref_llama3(messages, eot=True):
    text, spans = "<|begin_of_text|>", []
    for m in messages:
        text += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
        start = len(text)
        text += m["content"].strip()
        if m["role"] == "assistant" and m.get("train", True):
            spans.append((start, len(text) + (len("<|eot_id|>") if eot else 0)))
        text += "<|eot_id|>"
    return text, [s for s in spans if s[1] > s[0]]


def ref_gemma(messages):
    text, spans = "<bos>", []
    first = ""
    if messages[0]["role"] == "system":
        first, messages = messages[0]["content"] + "\n\n", messages[1:]
    for k, m in enumerate(messages):
        role = "model" if m["role"] == "assistant" else m["role"]
        text += f"<start_of_turn>{role}\n" + (first if k == 0 else "")
        start = len(text)
        text += m["content"].strip()
        if m["role"] == "assistant":
            spans.append((start, len(text) + len("<end_of_turn>")))
        text += "<end_of_turn>\n"
    return text, [s for s in spans if s[1] > s[0]]


def ref_mistral(messages):
    text, spans = "<s>", []
    for m in messages:
        if m["role"] == "user":
            text += f"[INST] {m['content']} [/INST]"
        else:
            text += " "
            start = len(text)
            text += m["content"] + "</s>"
            spans.append((start, len(text)))
    return text, spans


FAMILIES = {
    "qwen": (QWEN, {}, ref_chatml),
    "llama3": (LLAMA3, {"bos_token": "<|begin_of_text|>"}, ref_llama3),
    "gemma": (GEMMA, {"bos_token": "<bos>"}, ref_gemma),
    "mistral": (MISTRAL, {"bos_token": "<s>", "eos_token": "</s>"}, ref_mistral),
}

CONVS = [
    [{"role": "user", "content": "Hi there"}, {"role": "assistant", "content": "Hello! How can I help?"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
     {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"},
     {"role": "assistant", "content": " 6, of course.  "}],
    [{"role": "user", "content": "Think first"},
     {"role": "assistant", "content": "<think>\nhmm, ok\n</think>\n\nDone thinking."},
     {"role": "user", "content": "Again, in 日本語"},
     {"role": "assistant", "content": "<think>again</think>はい"}],
]


def _ok_for(family, messages):
    return not (family == "mistral" and messages[0]["role"] == "system")


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("k", range(len(CONVS)))
def test_ids_and_masks_match_the_oracles(twins, family, k):
    ours, hf_path = twins
    source, specials, ref = FAMILIES[family]
    messages = CONVS[k]
    if not _ok_for(family, messages):
        pytest.skip("the Mistral shape has no system role")
    hf = tf.hf_fast(hf_path, source, **specials)
    fmt = ChatTemplate(source, name=family, **specials)
    ids, mask = ours.render_conversation({"messages": messages}, max_tokens=10**6, chat_format=fmt)
    assert ids == hf_ids(hf, messages)
    text, spans = ref(messages)
    assert hf.apply_chat_template(messages, tokenize=False) == text
    want, ref_ids = char_mask(hf, text, spans)
    assert ref_ids == ids
    assert mask == want
    assert any(mask)


def test_generation_markers_equal_hf_mask(twins):
    ours, hf_path = twins
    hf = tf.hf_fast(hf_path, GENERATION)
    fmt = ChatTemplate(GENERATION, name="generation")
    assert fmt.has_generation_markers
    for messages in CONVS:
        out = hf.apply_chat_template(messages, tokenize=True, return_dict=True,
                                     return_assistant_tokens_mask=True)
        ids, mask = ours.render_conversation({"messages": messages}, 10**6, chat_format=fmt)
        assert ids == list(out["input_ids"])
        assert mask == list(out["assistant_masks"])
        assert any(mask)


def test_stock_template_without_markers_gets_the_mask_hf_leaves_empty(twins):
    ours, hf_path = twins
    hf = tf.hf_fast(hf_path, QWEN)
    messages = CONVS[1]
    # transformers logs that the template has no generation keyword.
    out = hf.apply_chat_template(messages, tokenize=True, return_dict=True,
                                 return_assistant_tokens_mask=True)
    assert not any(out["assistant_masks"])
    ids, mask = ours.render_conversation({"messages": messages}, 10**6, chat_format=ChatTemplate(QWEN))
    text, spans = ref_chatml(messages)
    assert mask == char_mask(hf, text, spans)[0]
    assert sum(mask) > 0


def test_mask_policies(twins):
    ours, hf_path = twins
    hf = tf.hf_fast(hf_path, QWEN)
    messages = CONVS[1]
    conv = {"messages": messages}
    last = ChatTemplate(QWEN, train_on="last")
    assert ours.render_conversation(conv, 10**6, chat_format=last)[1] == \
        char_mask(hf, *ref_chatml(messages, last_only=True))[0]
    no_eot = ChatTemplate(QWEN, train_end_of_turn=False)
    assert ours.render_conversation(conv, 10**6, chat_format=no_eot)[1] == \
        char_mask(hf, *ref_chatml(messages, eot=False))[0]
    flagged = [dict(m) for m in messages]
    flagged[2]["train"] = False
    want = char_mask(hf, *ref_chatml(flagged))[0]
    assert ours.render_conversation({"messages": flagged}, 10**6, chat_format=ChatTemplate(QWEN))[1] == want
    flagged[2]["train"] = True
    assert ours.render_conversation({"messages": flagged}, 10**6, chat_format=last)[1] == \
        char_mask(hf, *ref_chatml(flagged, last_only=True))[0]
    # The flag never reaches the template: ids are unchanged.
    assert ours.render_conversation({"messages": flagged}, 10**6, chat_format=last)[0] == hf_ids(hf, messages)


def test_tools_and_tool_calls(twins):
    ours, hf_path = twins
    hf = tf.hf_fast(hf_path, TOOLS)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather «now»",
              "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    messages = [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "{\"temp\": 21.5}"},
        {"role": "assistant", "content": "It is 21.5 degrees."},
    ]
    ids, mask = ours.render_conversation({"messages": messages, "tools": tools}, 10**6,
                                         chat_format=ChatTemplate(TOOLS, name="tools"))
    assert ids == hf_ids(hf, messages, tools=tools)
    text = hf.apply_chat_template(messages, tools=tools, tokenize=False)
    # The call is what the assistant's message produced: trained, with its end of turn.
    call_start = text.index("<tool_call>")
    call_end = text.index("</tool_call>") + len("</tool_call><|im_end|>")
    start = text.rindex("It is 21.5")
    spans = [(call_start, call_end), (start, start + len("It is 21.5 degrees.<|im_end|>"))]
    want, _ = char_mask(hf, text, spans)
    assert mask == want
    # A train flag on the call's message leaves only the answer.
    flagged = [dict(m) for m in messages]
    flagged[1]["train"] = False
    ids2, mask2 = ours.render_conversation({"messages": flagged, "tools": tools}, 10**6,
                                           chat_format=ChatTemplate(TOOLS, name="tools"))
    assert ids2 == ids
    assert mask2 == char_mask(hf, text, spans[1:])[0]


def test_completion_prompt_and_errors(twins):
    ours, hf_path = twins
    hf = tf.hf_fast(hf_path, QWEN)
    messages = CONVS[1]
    fmt = ChatTemplate(QWEN, name="qwen")
    prompt = ours.render_for_completion({"messages": messages}, chat_format=fmt)
    assert prompt == hf_ids(hf, messages[:-1], add_generation_prompt=True)
    gemma = ChatTemplate(GEMMA, name="gemma", bos_token="<bos>")
    bad = {"messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    with pytest.raises(TemplateError, match="gemma.*alternate") as e:
        ours.render_conversation(bad, chat_format=gemma)
    assert e.value.template == "gemma"
    with pytest.raises(convpack.ConversationError, match="message 1"):
        ours.render_conversation({"messages": [{"role": "user", "content": "a"},
                                               {"role": "robot", "content": "b"}]}, chat_format=fmt)
    # A template that emits an assistant's content twice: no mask can be told.
    twice = "{% for m in messages %}{{ m.content }}{% if m.role == 'assistant' %}{{ m.content | upper }}{% endif %}{% endfor %}"
    with pytest.raises(TemplateError, match="message 1"):
        ours.render_conversation({"messages": CONVS[0]}, chat_format=ChatTemplate(twice, name="twice"))
    with pytest.raises(ValueError, match="does not compile"):
        ChatTemplate("{% for %}")


def test_render_conversations_in_batch_equals_one_by_one(twins):
    ours, _ = twins
    fmt = ChatTemplate(LLAMA3, bos_token="<|begin_of_text|>")
    convs = [{"messages": m} for m in CONVS] * 5
    ids, mask, offsets = ours.render_conversations(convs, num_threads=2, chat_format=fmt)
    for i, c in enumerate(convs):
        a, b = ours.render_conversation(c, chat_format=fmt)
        assert ids[offsets[i]:offsets[i + 1]].tolist() == a
        assert mask[offsets[i]:offsets[i + 1]].tolist() == b


def test_default_format_is_the_tokenizers_chat_template(twins):
    ours, hf_path = twins

    # A Hugging Face directory whose tokenizer_config.json has the template.
    directory = os.path.join(os.path.dirname(hf_path), "with_template")
    os.makedirs(directory, exist_ok=True)
    shutil.copy(hf_path, os.path.join(directory, "tokenizer.json"))
    with open(os.path.join(directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"chat_template": LLAMA3, "bos_token": "<|begin_of_text|>"}, f)
    wrapped = convpack.Tokenizer.from_hf(directory)
    assert wrapped.chat_template == LLAMA3
    hf = tf.hf_fast(hf_path, LLAMA3, bos_token="<|begin_of_text|>")
    got = wrapped.render_conversation({"messages": CONVS[0]})
    assert got[0] == hf_ids(hf, CONVS[0])
    # Asked for explicitly, nanochat's format needs nanochat's tokens.
    with pytest.raises(ValueError, match="<\\|bos\\|>"):
        wrapped.render_conversation({"messages": CONVS[0]}, chat_format=convpack.NANOCHAT)
    with pytest.raises(ValueError, match="<\\|bos\\|>"):
        ours.render_conversation({"messages": CONVS[0]})


text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\ue000\ue001\ue010\ue011"),
               max_size=40)


@st.composite
def conversations(draw):
    n = draw(st.integers(1, 4))
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(text)})
    for _ in range(n):
        messages.append({"role": "user", "content": draw(text)})
        messages.append({"role": "assistant", "content": draw(text)})
    return messages


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=conversations(), family=st.sampled_from(["qwen", "llama3", "gemma"]))
def test_generated_conversations(twins, messages, family):
    ours, hf_path = twins
    source, specials, ref = FAMILIES[family]
    hf = _hf_cache(hf_path, family)
    fmt = ChatTemplate(source, name=family, **specials)
    ids, mask = ours.render_conversation({"messages": messages}, max_tokens=10**6, chat_format=fmt)
    assert ids == hf_ids(hf, messages)
    want, _ = char_mask(hf, *ref(messages))
    assert mask == want


_HF = {}


def _hf_cache(hf_path, family):
    if family not in _HF:
        source, specials, _ = FAMILIES[family]
        _HF[family] = tf.hf_fast(hf_path, source, **specials)
    return _HF[family]


@pytest.mark.parametrize("mode", ["padded", "stream", "bestfit", "varlen"])
@pytest.mark.parametrize("truncate", ["tail", "turns"])
def test_datagenerator_over_a_templated_mixture(twins, mode, truncate):
    ours, _ = twins
    fmt = ChatTemplate(QWEN, name="qwen")
    dataset = [{"messages": m} for m in CONVS] * 4
    dataset.append({"messages": [{"role": "user", "content": "x"},
                                 {"role": "assistant", "content": "", "train": False}]})
    seq_len = 24
    gen = convpack.DataGenerator(dataset, ours, batch_size=2, seq_len=seq_len, mode=mode,
                                 output="numpy", chat_format=fmt, truncate=truncate,
                                 num_threads=2, prefetch=1)
    rendered = [ours.render_conversation(c, 10**6, chat_format=fmt) for c in dataset]
    supervised = {t for ids, mask in rendered for t, m in zip(ids[1:], mask[1:]) if m}
    seen = set()
    for _ in range(6):
        batch = next(gen)
        inputs, targets = batch[0], batch[1]
        assert inputs.shape[0] == 2
        seen |= {int(t) for t in targets.ravel() if t >= 0}
    if mode != "stream":
        assert seen
    if mode != "stream" and truncate == "tail":
        # (A piece of a split conversation may keep a <think> block the
        # whole one strips, so this holds for whole conversations only.)
        assert seen <= supervised
    gen.close()


@pytest.mark.parametrize("mode", ["bestfit", "stream"])
def test_turns_shards_of_a_template_equal_the_on_the_fly_split(twins, tmp_path, mode):
    # Shards split at turns with a template give the generator's batches.
    pytest.importorskip("pyarrow")
    ours, _ = twins
    fmt = ChatTemplate(QWEN, name="qwen")
    dataset = [{"messages": m} for m in CONVS] * 3
    row = 25
    kw = dict(batch_size=2, seq_len=24 if mode == "bestfit" else 12, mode=mode, output="numpy",
              chat_format=fmt, truncate="turns", max_tokens=row)
    shards = convpack.render_shards(dataset, ours, tmp_path, max_tokens=row, truncate="turns",
                                    chat_format=fmt, rows_per_shard=4, progress=False)
    assert any(len(shards[i][2]) > 1 for i in range(len(dataset)))  # some were split
    a, b = convpack.DataGenerator(shards, ours, **kw), convpack.DataGenerator(dataset, ours, **kw)
    for _ in range(5):
        for x, y in zip(next(a), next(b)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    assert a.stats["split"] == b.stats["split"]


# A template whose text for a turn depends on contents: a user message that
# starts with "!" is marked urgent (its "!" dropped), and the reply to an
# urgent message is trimmed. A render with every content a sentinel (which
# convpack reuses across conversations of the same roles) cannot show that.
# (Each `{%-` also strips the newline before it.)
URGENT = (
    "{%- for m in messages -%}"
    "{%- if m.role == 'user' and m.content.startswith('!') -%}"
    "<|im_start|>user\n[urgent] {{ m.content[1:] }}<|im_end|>\n"
    "{%- elif m.role == 'assistant' and loop.index0 > 0 and messages[loop.index0 - 1].content.startswith('!') -%}"
    "<|im_start|>assistant\n{{ m.content | trim }}<|im_end|>\n"
    "{%- else -%}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
    "{%- endif -%}"
    "{%- endfor -%}"
)


def ref_urgent(messages):
    text, spans = "", []
    for i, m in enumerate(messages):
        c = m["content"]
        if m["role"] == "user" and c.startswith("!"):
            text += f"<|im_start|>user\n[urgent] {c[1:]}<|im_end|>"
            continue
        text += f"<|im_start|>{m['role']}\n"
        if m["role"] == "assistant":
            if i > 0 and messages[i - 1]["content"].startswith("!"):
                c = c.strip(" \t\n\r\x0b\x0c")
            start = len(text)
            text += c
            spans.append((start, len(text) + len("<|im_end|>")))
        else:
            text += c
        text += "<|im_end|>"
    return text, spans


urgent_text = st.lists(st.sampled_from(["!", " ", "\n", "a", "b", "x", "é", "<|im_end|>", "\u4e2d"]),
                       max_size=8).map("".join)


@st.composite
def same_roles(draw):
    """Conversations of one role sequence with varied contents."""
    roles = draw(st.sampled_from([["user", "assistant"], ["system", "user", "assistant"],
                                  ["user", "assistant", "user", "assistant"]]))
    return [[{"role": r, "content": draw(urgent_text)} for r in roles] for _ in range(6)]


_URGENT = {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(convs=same_roles(), family=st.sampled_from(["qwen", "llama3", "urgent"]))
def test_one_template_over_many_conversations_of_the_same_roles(twins, convs, family):
    """One ChatTemplate renders conversation after conversation of the same
    roles (one by one and in a batch): ids are apply_chat_template's and
    masks the format's own, whether or not a turn's text depends on the
    contents."""
    ours, hf_path = twins
    if family == "urgent":
        source, specials, ref = URGENT, {}, ref_urgent
    else:
        source, specials, ref = FAMILIES[family]
    if family not in _URGENT:
        _URGENT[family] = (tf.hf_fast(hf_path, source, **specials),
                           ChatTemplate(source, name=family, **specials))
    hf, fmt = _URGENT[family]
    wanted = []
    for messages in convs:
        ids, mask = ours.render_conversation({"messages": messages}, max_tokens=10**6, chat_format=fmt)
        assert ids == hf_ids(hf, messages)
        want, _ = char_mask(hf, *ref(messages))
        assert mask == want
        wanted.append((ids, mask))
    flat, flat_mask, offsets = ours.render_conversations(
        [{"messages": m} for m in convs], max_tokens=10**6, num_threads=2, chat_format=fmt)
    for i, (ids, mask) in enumerate(wanted):
        assert flat[offsets[i]:offsets[i + 1]].tolist() == ids
        assert flat_mask[offsets[i]:offsets[i + 1]].tolist() == mask
