"""`convpack stats` / `show` with a chat format, and the format in
DataGenerator's state."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("tokenizers")

import hf_fixtures  # noqa: E402

import convpack  # noqa: E402
from convpack import cli  # noqa: E402

CONVS = [
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}]},
    {"messages": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
                  {"role": "user", "content": "3+3?"}, {"role": "assistant", "content": "6", "train": False}]},
    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "train": False}]},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli-format")
    hf_dir = root / "llama3"
    hf_fixtures.write_tokenizer_json("llama3", hf_dir)
    data = root / "convs.jsonl"
    data.write_text("".join(json.dumps(c["messages"]) + "\n" for c in CONVS))
    return hf_dir, data


def test_stats_with_the_tokenizers_template(setup, capsys):
    hf_dir, data = setup
    assert cli.main(["stats", f"customjson:path={data}", "--tokenizer", str(hf_dir), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    tok = convpack.Tokenizer.from_hf(hf_dir)
    rendered = [tok.render_conversation(c) for c in CONVS]
    assert stats["chat_format"] == "chat template chat_template"
    assert stats["tokens"] == sum(len(ids) for ids, _ in rendered)
    assert stats["supervised_tokens"] == sum(sum(m) for _, m in rendered) > 0
    assert stats["unsupervised"] == 1  # the last conversation trains on nothing


def test_stats_and_show_with_a_template_file(setup, tmp_path, capsys):
    hf_dir, data = setup
    chatml = tmp_path / "chatml.jinja"
    chatml.write_text(hf_fixtures.QWEN3_CHAT_TEMPLATE)
    assert cli.main(["stats", f"customjson:path={data}", "--tokenizer", str(hf_dir),
                     "--chat-format", str(chatml), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    tok = convpack.Tokenizer.from_hf(hf_dir)
    fmt = convpack.ChatTemplate(hf_fixtures.QWEN3_CHAT_TEMPLATE)
    assert stats["chat_format"] == "chat template chatml.jinja"
    assert stats["tokens"] == sum(len(tok.render_conversation(c, chat_format=fmt)[0]) for c in CONVS)
    assert cli.main(["show", f"customjson:path={data}", "-n", "1", "--tokenizer", str(hf_dir),
                     "--chat-format", str(chatml)]) == 0
    out = capsys.readouterr().out
    ids, mask = tok.render_conversation(CONVS[0], chat_format=fmt)
    assert f"--- {len(ids)} tokens, {sum(mask)} trained on (chat template chatml.jinja) ---" in out
    assert "train | Hello| there\n" in out  # (<|im_end|> is plain text in this vocabulary)
    assert cli.format_tokens(tok, ids, mask, color=False) in out


def test_bad_format_options_are_named(setup, capsys):
    hf_dir, data = setup
    assert cli.main(["stats", f"customjson:path={data}", "--chat-format", "nanochat"]) == 2
    assert "--chat-format needs --tokenizer" in capsys.readouterr().err
    assert cli.main(["show", f"customjson:path={data}", "--tokenizer", str(hf_dir),
                     "--chat-format", "nanochat"]) == 2
    assert "<|bos|>" in capsys.readouterr().err
    assert cli.main(["show", f"customjson:path={data}", "--tokenizer", str(hf_dir),
                     "--chat-format", "no/such/file.jinja"]) == 2
    assert "not 'nanochat', 'tokenizer' or a template file" in capsys.readouterr().err


def test_state_under_another_chat_format_is_refused(setup):
    hf_dir, _ = setup
    tok = convpack.Tokenizer.from_hf(hf_dir)
    data = CONVS[:2] * 4
    kwargs = dict(batch_size=2, seq_len=16, mode="bestfit", output="numpy", num_threads=1, prefetch=0)
    gen = convpack.DataGenerator(data, tok, **kwargs)
    next(gen)
    state = json.loads(json.dumps(gen.state_dict()))
    assert state["chat_format"] == convpack.ChatTemplate(tok.chat_template,
                                                         bos_token="<|begin_of_text|>",
                                                         eos_token="<|eot_id|>").identity
    same = convpack.DataGenerator(data, tok, **kwargs)
    same.load_state_dict(state)
    other = convpack.DataGenerator(data, tok, chat_format=hf_fixtures.QWEN3_CHAT_TEMPLATE, **kwargs)
    with pytest.raises(ValueError, match="chat format.*field 'chat_format'"):
        other.load_state_dict(state)
    last = convpack.DataGenerator(
        data, tok, chat_format=convpack.ChatTemplate(tok.chat_template, bos_token="<|begin_of_text|>",
                                                     eos_token="<|eot_id|>", train_on="last"), **kwargs)
    with pytest.raises(ValueError, match="train_on='last'"):
        last.load_state_dict(state)
    gen.close(), same.close(), other.close(), last.close()
