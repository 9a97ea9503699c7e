"""The families' stock chat templates (Qwen 3, Llama 3.1, Gemma 3, a
GPT-OSS-like harmony shape), none of which has ``{% generation %}`` markers:
ids against transformers' apply_chat_template, masks against references
written here from each format's rules.

The rule the references follow: an assistant message trains on what the
model generates for it, i.e. everything its turn emits after the opener that
``add_generation_prompt`` would put there (a re-emitted ``<think>`` block, a
harmony channel header, tool calls), up to and including its end-of-turn
token; what a template drops from history (earlier thinking) is not there to
train on."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

import template_fixtures as tf  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from convpack import ChatTemplate  # noqa: E402


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    return tf.twins(str(tmp_path_factory.mktemp("hf-stock")))


_HF = {}


def hf_for(hf_path, source, **specials):
    key = (source, tuple(sorted(specials.items())))
    if key not in _HF:
        _HF[key] = tf.hf_fast(hf_path, source, **specials)
    return _HF[key]


def hf_ids(hf, messages, **kw):
    out = hf.apply_chat_template(messages, tokenize=True, **kw)
    if hasattr(out, "keys"):
        out = out["input_ids"]
    return list(out)


def char_mask(hf, text, spans):
    """1 for each token whose characters overlap a span (HF's offsets)."""
    enc = hf(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(s < e2 and s2 < e for s2, e2 in spans)) for s, e in enc["offset_mapping"]]
    return mask, list(enc["input_ids"])


# ------------------------------------------------------------- references


def ref_qwen3(messages, enable_thinking=None):
    text, spans = "", []
    if messages[0]["role"] == "system":
        text += f"<|im_start|>system\n{messages[0]['content']}<|im_end|>\n"
    last_query = len(messages) - 1
    for i in range(len(messages) - 1, -1, -1):
        c = messages[i]["content"]
        if messages[i]["role"] == "user" and not (c.startswith("<tool_response>") and c.endswith("</tool_response>")):
            last_query = i
            break
    empty_think = "<think>\n\n</think>\n\n"
    for i, m in enumerate(messages):
        content = m["content"] if isinstance(m.get("content"), str) else ""
        if m["role"] == "user" or (m["role"] == "system" and i > 0):
            text += f"<|im_start|>{m['role']}\n{content}<|im_end|>\n"
        elif m["role"] == "assistant":
            reasoning = ""
            if isinstance(m.get("reasoning_content"), str):
                reasoning = m["reasoning_content"]
            elif "</think>" in content:
                reasoning = content.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
                content = content.split("</think>")[-1].lstrip("\n")
            text += "<|im_start|>assistant\n"
            start = len(text)
            if i > last_query and (i == len(messages) - 1 or reasoning):
                body = "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + content.lstrip("\n")
            else:
                body = content
            for k, call in enumerate(m.get("tool_calls") or []):
                if (k == 0 and content) or k > 0:
                    body += "\n"
                f = call["function"]
                body += '<tool_call>\n{"name": "' + f["name"] + '", "arguments": ' + \
                    json.dumps(f["arguments"], ensure_ascii=False) + "}\n</tool_call>"
            text += body + "<|im_end|>\n"
            # With enable_thinking=False the generation prompt holds the empty block.
            if enable_thinking is False and body.startswith(empty_think):
                start += len(empty_think)
            spans.append((start, len(text) - len("\n")))  # the body and <|im_end|>
        elif m["role"] == "tool":
            if i == 0 or messages[i - 1]["role"] != "tool":
                text += "<|im_start|>user"
            text += f"\n<tool_response>\n{content}\n</tool_response>"
            if i == len(messages) - 1 or messages[i + 1]["role"] != "tool":
                text += "<|im_end|>\n"
    return text, spans


def ref_llama31(messages):
    text = "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
    text += "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    if messages[0]["role"] == "system":
        text += messages[0]["content"].strip()
        messages = messages[1:]
    text += "<|eot_id|>"
    spans = []
    for m in messages:
        if m["role"] == "tool":
            text += f"<|start_header_id|>ipython<|end_header_id|>\n\n{json.dumps(m['content'])}<|eot_id|>"
            continue
        text += f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
        start = len(text)
        if "tool_calls" in m:
            f = m["tool_calls"][0]["function"]
            text += '{"name": "' + f["name"] + '", "parameters": ' + json.dumps(f["arguments"]) + "}"
        else:
            text += m["content"].strip()
        text += "<|eot_id|>"
        if m["role"] == "assistant":
            spans.append((start, len(text)))
    return text, spans


def ref_gemma3(messages):
    text, spans, first = "<bos>", [], ""
    if messages[0]["role"] == "system":
        first, messages = messages[0]["content"] + "\n\n", messages[1:]
    for k, m in enumerate(messages):
        role = "model" if m["role"] == "assistant" else m["role"]
        text += f"<start_of_turn>{role}\n" + (first if k == 0 else "")
        start = len(text)
        text += m["content"].strip() + "<end_of_turn>"
        if m["role"] == "assistant":
            spans.append((start, len(text)))
        text += "\n"
    return text, spans


HARMONY_SYSTEM = (
    "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
    "Knowledge cutoff: 2024-06\nCurrent date: 2025-06-28\n\nReasoning: medium\n\n"
    "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>"
)


def ref_harmony(messages):
    text, spans = HARMONY_SYSTEM, []
    last_user = max(i for i, m in enumerate(messages) if m["role"] == "user")
    for i, m in enumerate(messages):
        if m["role"] == "system":
            text += f"<|start|>developer<|message|># Instructions\n\n{m['content']}<|end|>"
        elif m["role"] == "user":
            text += f"<|start|>user<|message|>{m['content']}<|end|>"
        elif m["role"] == "tool":
            name = messages[i - 1]["tool_calls"][0]["function"]["name"]
            text += f"<|start|>functions.{name} to=assistant<|channel|>commentary<|message|>{m['content']}<|end|>"
        else:
            text += "<|start|>assistant"
            start = len(text)
            if m.get("thinking") and i > last_user:
                text += f"<|channel|>analysis<|message|>{m['thinking']}<|end|><|start|>assistant"
            if m.get("tool_calls"):
                f = m["tool_calls"][0]["function"]
                text += f" to=functions.{f['name']}<|channel|>commentary json<|message|>" \
                    f"{json.dumps(f['arguments'])}<|call|>"
            else:
                end = "<|return|>" if i == len(messages) - 1 else "<|end|>"
                text += f"<|channel|>final<|message|>{m['content']}{end}"
            spans.append((start, len(text)))
    return text, spans


FAMILIES = {
    "qwen3": (tf.QWEN3_STOCK, {}, ref_qwen3),
    "llama31": (tf.LLAMA31_STOCK, {"bos_token": "<|begin_of_text|>"}, ref_llama31),
    "gemma3": (tf.GEMMA3_STOCK, {"bos_token": "<bos>"}, ref_gemma3),
    "harmony": (tf.HARMONY, {}, ref_harmony),
}


def u(c):
    return {"role": "user", "content": c}


def a(c, **kw):
    return {"role": "assistant", "content": c, **kw}


PLAIN = [
    [u("Hi there"), a("Hello! How can I help?")],
    [{"role": "system", "content": "Be brief."}, u("2+2?"), a("4"), u("And 3+3?"), a(" 6, of course.  ")],
    [u("日本語で"), a("\nはい、どうぞ。\n"), u("ok"), a("")],
]


def check(twins, family, messages, variables=None, **hf_kw):
    ours, hf_path = twins
    source, specials, ref = FAMILIES[family]
    variables = variables or {}
    hf = hf_for(hf_path, source, **specials)
    fmt = ChatTemplate(source, name=family, **specials, **variables)
    ids, mask = ours.render_conversation({"messages": messages}, max_tokens=10**6, chat_format=fmt)
    assert ids == hf_ids(hf, messages, **variables, **hf_kw)
    text, spans = ref(messages, **variables) if variables else ref(messages)
    assert hf.apply_chat_template(messages, tokenize=False, **variables, **hf_kw) == text
    want, ref_ids = char_mask(hf, text, spans)
    assert ref_ids == ids
    assert mask == want
    return hf, ids, mask


@pytest.mark.parametrize("family", sorted(FAMILIES))
@pytest.mark.parametrize("k", range(len(PLAIN)))
def test_stock_templates_plain_conversations(twins, family, k):
    messages = PLAIN[k]
    if family == "harmony" and k == 2:
        messages = messages[:2]  # an empty final message: nothing the reference needs to cover
    hf, ids, mask = check(twins, family, messages)
    assert any(mask)
    # The stock template has no generation markers: HF's own mask is all zero.
    out = hf.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    assert list(out["input_ids"]) == ids
    assert not any(out["assistant_masks"])


def test_qwen3_think_history(twins):
    # The content's own <think> blocks: stripped from the turn before the
    # last query, re-emitted (normalised) for the last turn.
    messages = [u("Think first"), a("<think>\nhmm, ok\n</think>\n\nDone thinking."),
                u("Again"), a("<think>again</think>Yes.")]
    _, ids, mask = check(twins, "qwen3", messages)
    ours = twins[0]
    trained = ours.decode([t for t, m in zip(ids, mask) if m])
    assert "hmm" not in trained
    assert trained == "Done thinking.<|im_end|><think>\nagain\n</think>\n\nYes.<|im_end|>"


def test_qwen3_reasoning_content_and_enable_thinking(twins):
    messages = [u("q1"), a("a1", reasoning_content="r1"), u("q2"), a("a2", reasoning_content="r2")]
    for variables in ({}, {"enable_thinking": True}, {"enable_thinking": False}):
        check(twins, "qwen3", messages, variables)
    # enable_thinking=False: the empty block is the generation prompt's, not trained.
    plain = [u("q1"), a("a1")]
    _, ids, mask = check(twins, "qwen3", plain, {"enable_thinking": False})
    assert twins[0].decode([t for t, m in zip(ids, mask) if m]) == "a1<|im_end|>"
    _, ids, mask = check(twins, "qwen3", plain, {"enable_thinking": True})
    assert twins[0].decode([t for t, m in zip(ids, mask) if m]) == "<think>\n\n</think>\n\na1<|im_end|>"
    # The generation prompt as transformers renders it, both ways.
    ours, hf_path = twins
    hf = hf_for(hf_path, tf.QWEN3_STOCK)
    for flag in (True, False):
        fmt = ChatTemplate(tf.QWEN3_STOCK, enable_thinking=flag)
        assert ours.render_for_completion({"messages": messages}, chat_format=fmt) == \
            hf_ids(hf, messages[:-1], add_generation_prompt=True, enable_thinking=flag)


CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}


def test_qwen3_multi_step_tool_calls(twins):
    messages = [u("Weather in Paris?"),
                a("Let me look.", reasoning_content="need the tool", tool_calls=[CALL]),
                {"role": "tool", "content": "21.5"},
                a("It is 21.5 degrees.", reasoning_content="got it")]
    _, ids, mask = check(twins, "qwen3", messages)
    trained = twins[0].decode([t for t, m in zip(ids, mask) if m])
    assert "<tool_call>" in trained and "need the tool" in trained and "got it" in trained
    no_content = [messages[0], {"role": "assistant", "content": None, "tool_calls": [CALL]}] + messages[2:]
    check(twins, "qwen3", no_content)


def test_llama31_tool_call(twins):
    messages = [u("Weather in Paris?"), {"role": "assistant", "tool_calls": [CALL]},
                {"role": "tool", "content": "21.5"}, a("It is 21.5 degrees.")]
    check(twins, "llama31", messages)


def test_harmony_channels(twins):
    thinking = [u("2+2?"), a("4", thinking="easy"), u("3+3?"), a("6", thinking="also easy")]
    _, ids, mask = check(twins, "harmony", thinking)
    trained = twins[0].decode([t for t, m in zip(ids, mask) if m])
    assert "also easy" in trained and "easy<|end|>" not in trained.replace("also easy", "")
    calls = [u("Weather?"), {"role": "assistant", "content": "", "thinking": "call it", "tool_calls": [CALL]},
             {"role": "tool", "content": "21.5"}, a("21.5 degrees.")]
    check(twins, "harmony", calls)


def test_end_of_turn_policy_on_a_rewritten_turn(twins):
    ours, hf_path = twins
    messages = [u("q"), a("<think>r</think>A")]
    fmt = ChatTemplate(tf.QWEN3_STOCK, train_end_of_turn=False)
    ids, mask = ours.render_conversation({"messages": messages}, 10**6, chat_format=fmt)
    assert ours.decode([t for t, m in zip(ids, mask) if m]) == "<think>\nr\n</think>\n\nA"


text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\ue000\ue001\ue010\ue011"),
               max_size=30)
maybe_think = st.one_of(text, st.builds(lambda r, c: f"<think>{r}</think>{c}", text, text))


@st.composite
def conversations(draw):
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(text)})
    for _ in range(draw(st.integers(1, 3))):
        messages.append(u(draw(text)))
        m = a(draw(maybe_think))
        if draw(st.booleans()):
            m["reasoning_content"] = draw(text)
        messages.append(m)
    return messages


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=conversations(), thinking=st.sampled_from([None, False]))
def test_generated_qwen3_conversations(twins, messages, thinking):
    check(twins, "qwen3", messages, {} if thinking is None else {"enable_thinking": thinking})


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(messages=conversations(), family=st.sampled_from(["llama31", "gemma3"]))
def test_generated_llama31_gemma3_conversations(twins, messages, family):
    messages = [{k: v for k, v in m.items() if k != "reasoning_content"} for m in messages]
    check(twins, family, messages)
