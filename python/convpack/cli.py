"""The ``convpack`` command.

``convpack demo`` (also plain ``convpack``) runs the main job on a bundled
sample with nothing to download; ``convpack stats TASK`` and ``convpack show
TASK`` look at any task's conversations; ``convpack bench`` runs the
benchmark suite and writes its report.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from typing import Any, Optional

__all__ = [
    "build_parser",
    "build_task",
    "cache_dir",
    "chat_format_option",
    "conversation_stats",
    "demo_tokenizer",
    "format_conversation",
    "format_tokens",
    "load_tokenizer",
    "main",
    "parse_task_spec",
    "sample_path",
    "use_color",
]

DEMO_VOCAB_SIZE = 4096


# ------------------------------------------------------------------ tasks

# name -> (module, class, default arguments)
TASK_NAMES = {
    "arc": ("tasks.arc", "ARC", {"subset": "ARC-Easy", "split": "train"}),
    "customjson": ("tasks.customjson", "CustomJSON", {}),
    "gsm8k": ("tasks.gsm8k", "GSM8K", {"subset": "main", "split": "train"}),
    "humaneval": ("tasks.humaneval", "HumanEval", {}),
    "mmlu": ("tasks.mmlu", "MMLU", {"subset": "all", "split": "test"}),
    "simplespelling": ("tasks.spellingbee", "SimpleSpelling", {"size": 1000, "split": "train"}),
    "smoltalk": ("tasks.smoltalk", "SmolTalk", {"split": "train"}),
    "spellingbee": ("tasks.spellingbee", "SpellingBee", {"size": 1000, "split": "train"}),
}
_TAKES_DATA_DIR = {"arc", "gsm8k", "humaneval", "mmlu", "smoltalk"}
_TASK_HELP = (
    "TASK is a task name with optional arguments, NAME[:KEY=VALUE,...], for example "
    "smoltalk:split=test, spellingbee:size=1000, mmlu:subset=all,split=test, "
    "customjson:path=file.jsonl (without a path: the bundled sample), gsm8k:stop=100. "
    f"Names: {', '.join(sorted(TASK_NAMES))}. start/stop/step slice any task. Data is found "
    "as the tasks package finds it: --data-dir, else $CONVPACK_DATA_DIR, else the hub."
)


# Task arguments that must be integers, whatever the task (a string here
# would only fail deep inside the task with a type error).
_INT_ARGUMENTS = ("size", "start", "stop", "step")


def sample_path() -> str:
    """The path of the bundled sample conversations (a CustomJSON file).

    Returns:
        ``convpack/data/sample_conversations.jsonl`` inside the installed package.
    """
    return os.path.join(os.path.dirname(__file__), "data", "sample_conversations.jsonl")


def parse_task_spec(spec: str) -> tuple:
    """Split a task spec into its name and keyword arguments.

    Args:
        spec: ``NAME[:KEY=VALUE,...]``, e.g. ``"mmlu:subset=all,split=test"``.

    Returns:
        ``(name, kwargs)``, e.g. ``("mmlu", {"subset": "all", "split": "test"})``;
        the name lower-cased, integer-looking values as ints.

    Raises:
        ValueError: an unknown task name, an argument that is not
            ``KEY=VALUE``, or a non-integer value for ``size``, ``start``,
            ``stop`` or ``step`` (e.g. ``size must be an integer, got 'ten'``).
    """
    name, _, rest = spec.partition(":")
    name = name.strip().lower()
    if name not in TASK_NAMES:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASK_NAMES))}")
    kwargs: dict = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"task argument {item!r} in {spec!r} is not KEY=VALUE")
        key, value = key.strip(), value.strip()
        if re.fullmatch(r"[+-]?\d+", value):
            kwargs[key] = int(value)
        elif key in _INT_ARGUMENTS:
            raise ValueError(f"task {name!r}: {key} must be an integer, got {value!r}")
        else:
            kwargs[key] = value
    return name, kwargs


def build_task(spec: str, data_dir: Optional[str] = None) -> Any:
    """Construct the task a spec names, its defaults filled in.

    Args:
        spec: see ``parse_task_spec``; ``customjson`` without ``path=`` reads
            the bundled sample.
        data_dir: a local data directory for the tasks that read one (ARC,
            GSM8K, HumanEval, MMLU, SmolTalk); None leaves the task's own
            lookup (``$CONVPACK_DATA_DIR``, else the hub).

    Returns:
        The task object (a ``tasks.common.Task``).

    Raises:
        ValueError: a bad spec, a data directory for a task that reads none,
            or arguments the task's constructor rejects.
        tasks.data.DatasetNotFoundError: the task's data cannot be found.
    """
    import importlib

    name, kwargs = parse_task_spec(spec)
    module_name, class_name, defaults = TASK_NAMES[name]
    kwargs = {**defaults, **kwargs}
    if name == "customjson":
        kwargs["filepath"] = kwargs.pop("path", kwargs.pop("filepath", sample_path()))
    if data_dir is not None:
        if name not in _TAKES_DATA_DIR:
            raise ValueError(f"task {name!r} does not read a data directory")
        kwargs["data_dir"] = data_dir
    cls = getattr(importlib.import_module(module_name), class_name)
    # Names checked here, so a typo is told with the valid names instead of
    # leaking a TypeError from some base class's __init__.
    accepted = _task_arguments(cls)
    unknown = sorted(set(kwargs) - set(accepted) - {"data_dir"})
    if unknown:
        raise ValueError(
            f"task {name!r} takes no argument {', '.join(map(repr, unknown))}; "
            f"its arguments are: {', '.join(a for a in accepted if a != 'data_dir') or 'none'}"
        )
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"bad arguments for {class_name}: {exc}") from None


def _task_arguments(cls: Any) -> list:
    """The keyword arguments a task class's constructor takes, following
    ``**kwargs`` that are handed to ``Task.__init__`` (``start``, ``stop``, ``step``)."""
    import inspect

    names: list = []
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = list(inspect.signature(init).parameters.values())[1:]
        names += [
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in names
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return names


# ------------------------------------------------------------ stats, show


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content)


def conversation_stats(conversations: Any) -> dict:
    """The seed's SmolTalk statistics over an iterable of conversations.

    Returns ``conversations``, ``messages``, ``mean_messages`` (per
    conversation), ``mean_chars`` (per message, part texts added up),
    ``short`` / ``medium`` / ``long`` (shares of messages under 50, 50-200
    and over 200 characters) and ``system`` (share of conversations opening
    with a system message). Shares are fractions in 0..1.

    Args:
        conversations: dicts with a ``"messages"`` list; message content is
            a string or a list of parts with ``"text"``.

    Returns:
        The dict above; every mean and share is 0.0 for an empty input.

    Raises:
        KeyError: a conversation without ``"messages"`` or a message
            without ``"role"`` / ``"content"``.
    """
    n_conv = n_msg = chars = short = medium = long_ = system = 0
    for conversation in conversations:
        messages = conversation["messages"]
        n_conv += 1
        if messages and messages[0]["role"] == "system":
            system += 1
        for message in messages:
            length = len(_message_text(message["content"]))
            n_msg += 1
            chars += length
            if length < 50:
                short += 1
            elif length <= 200:
                medium += 1
            else:
                long_ += 1

    def share(k: int, n: int) -> float:
        return k / n if n else 0.0

    return {
        "conversations": n_conv,
        "messages": n_msg,
        "mean_messages": share(n_msg, n_conv),
        "mean_chars": share(chars, n_msg),
        "short": share(short, n_msg),
        "medium": share(medium, n_msg),
        "long": share(long_, n_msg),
        "system": share(system, n_conv),
    }


def use_color(stream: Any = None, environ: Optional[dict] = None) -> bool:
    """Whether text written to ``stream`` may carry ANSI colour codes.

    True only when the stream is a terminal and ``NO_COLOR`` is unset or
    empty (https://no-color.org: any non-empty value turns colour off).

    Args:
        stream: the file the text goes to (default ``sys.stdout``).
        environ: the environment to read (default ``os.environ``).

    Returns:
        True to colour, False for plain text.
    """
    stream = sys.stdout if stream is None else stream
    environ = os.environ if environ is None else environ
    if environ.get("NO_COLOR"):
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _progress(iterable: Any, total: int, desc: str) -> Any:
    """``iterable`` with progress on stderr: a bar on a terminal (drawn
    once the work takes over a second, left on its own line when done), and
    one plain line when done otherwise (a pipe or a log file)."""
    if use_color(sys.stderr, {}):  # a terminal (NO_COLOR does not hide bars)
        from tqdm import tqdm

        yield from tqdm(iterable, total=total, desc=desc, delay=1.0, leave=True, file=sys.stderr)
        return
    sys.stdout.flush()  # what was said before this step comes first in a shared log
    start = time.perf_counter()
    done = 0
    try:
        for item in iterable:
            done += 1
            yield item
    finally:  # also when the consumer stops early
        print(f"{desc}: {done}/{total} in {time.perf_counter() - start:.1f} s", file=sys.stderr)


def _iter_task(task: Any, start: int, count: int, desc: str) -> Any:
    indices = range(start, min(start + count, len(task)))
    return (task[i] for i in _progress(indices, len(indices), desc))


def format_conversation(conversation: dict, max_chars: int = 1000) -> str:
    """A conversation as readable text.

    Each message is printed under its role, each assistant part under its
    type (so tool calls and their outputs show); other keys of the
    conversation follow on one line.

    Args:
        conversation: a dict with a ``"messages"`` list.
        max_chars: texts longer than this are cut, with a note of how much
            was left out; 0 never cuts.

    Returns:
        The text, without a trailing newline.
    """

    def clip(text: str) -> str:
        if max_chars and len(text) > max_chars:
            return text[:max_chars] + f" [... {len(text) - max_chars} more characters]"
        return text

    lines = []
    for message in conversation["messages"]:
        content = message["content"]
        if isinstance(content, str):
            lines.append(f"[{message['role']}]")
            lines.append(clip(content))
        else:
            lines.append(f"[{message['role']}] ({len(content)} parts)")
            for part in content:
                lines.append(f"  <{part.get('type')}>")
                lines.append("  " + clip(part.get("text", "")).replace("\n", "\n  "))
    extra = [k for k in conversation if k != "messages"]
    if extra:
        lines.append(
            "(other keys: " + ", ".join(f"{k}={conversation[k]!r:.60}" for k in extra) + ")"
        )
    return "\n".join(lines)


def load_tokenizer(directory: str) -> Any:
    """A tokenizer directory as the CLI reads it: convpack's or nanochat's
    (``Tokenizer.from_directory``), or a Hugging Face directory with a
    ``tokenizer.json`` (``Tokenizer.from_hf``, its ``chat_template`` then
    the default chat format).

    Raises:
        FileNotFoundError: the directory holds none of these.
        VocabularyError: a file is corrupt or cannot be reproduced exactly.
    """
    from .tokenizer import Tokenizer

    own = ("convpack_tokenizer.json", "tokenizer.pkl")
    if os.path.isfile(os.path.join(directory, "tokenizer.json")) and not any(
            os.path.lexists(os.path.join(directory, name)) for name in own):
        return Tokenizer.from_hf(directory)
    return Tokenizer.from_directory(directory)


def chat_format_option(tokenizer: Any, value: Optional[str]) -> Any:
    """The chat format ``--chat-format`` names: ``nanochat``, ``tokenizer``
    (the tokenizer's own ``chat_template``; the default, which falls back
    to nanochat's format for vocabularies without one) or the path of a
    Jinja template file (given the tokenizer's ``bos_token`` and
    ``eos_token``).

    Returns:
        ``convpack.NANOCHAT`` or a ``convpack.ChatTemplate``.

    Raises:
        FileNotFoundError: the template file does not exist.
        ValueError: ``tokenizer`` has no chat template, or the file's
            template does not compile.
    """
    from .chat_format import NANOCHAT, resolve_chat_format, template_for

    if value == "nanochat":
        return NANOCHAT
    if value is None or value == "tokenizer":
        template = resolve_chat_format(tokenizer, None)
        if template is None and value == "tokenizer":
            raise ValueError("--chat-format tokenizer: the tokenizer has no chat_template")
        return NANOCHAT if template is None else template
    if not os.path.isfile(value):
        raise FileNotFoundError(
            f"--chat-format {value}: not 'nanochat', 'tokenizer' or a template file")
    with open(value, encoding="utf-8") as f:
        source = f.read()
    return template_for(tokenizer, source, name=os.path.basename(value))


def _format_name(chat_format: Any) -> str:
    from .chat_format import ChatTemplate

    return f"chat template {chat_format.name}" if isinstance(chat_format, ChatTemplate) \
        else "nanochat"


def _rendering(args: argparse.Namespace) -> tuple:
    """``(tokenizer, chat format)`` from ``--tokenizer`` and
    ``--chat-format``, or ``(None, None)`` without a tokenizer."""
    if args.tokenizer is None:
        if args.chat_format is not None:
            raise ValueError("--chat-format needs --tokenizer")
        return None, None
    tokenizer = load_tokenizer(args.tokenizer)
    return tokenizer, chat_format_option(tokenizer, args.chat_format)


def _cmd_stats(args: argparse.Namespace) -> int:
    task = build_task(args.task, args.data_dir)
    count = len(task) if args.limit is None else args.limit
    if args.seq_len is not None and args.tokenizer is None:
        raise ValueError("--seq-len needs a tokenizer (--tokenizer and --seq-len go together)")
    if args.seq_len is not None and args.seq_len < 1:
        raise ValueError(f"--seq-len must be at least 1, got {args.seq_len}")
    tokenizer, chat_format = _rendering(args)
    conversations = list(_iter_task(task, 0, count, f"stats {args.task}"))
    stats = conversation_stats(conversations)
    stats["task"] = args.task
    if tokenizer is not None:
        # Rendered as DataGenerator renders them (max_tokens=2048).
        _, mask, offsets = tokenizer.render_conversations(conversations, chat_format=chat_format)
        lengths = [int(offsets[i + 1] - offsets[i]) for i in range(len(conversations))]
        supervised = [int(mask[offsets[i]:offsets[i + 1]].sum()) for i in range(len(conversations))]
        stats["chat_format"] = _format_name(chat_format)
        stats["tokens"] = sum(lengths)
        stats["supervised_tokens"] = sum(supervised)
        stats["unsupervised"] = sum(s == 0 for s in supervised)
        if args.seq_len is not None:
            row = args.seq_len + 1
            stats["row_tokens"] = row
            stats["longer_than_row"] = sum(n > row for n in lengths)
    if args.json:
        print(json.dumps(stats, indent=1))
        return 0
    print(f"{args.task}: {stats['conversations']} of {len(task)} conversations")
    print(f"  mean messages per conversation   {stats['mean_messages']:.2f}")
    print(f"  mean characters per message      {stats['mean_chars']:.1f}")
    print(f"  short messages (< 50 chars)      {100 * stats['short']:.1f}%")
    print(f"  medium messages (50-200 chars)   {100 * stats['medium']:.1f}%")
    print(f"  long messages (> 200 chars)      {100 * stats['long']:.1f}%")
    print(f"  with a system message           {100 * stats['system']:5.1f}%")
    if "tokens" in stats:
        print(f"  rendered with                    {stats['chat_format']}")
        print(f"  tokens (max_tokens=2048 each)    {stats['tokens']}")
        print(f"  trained-on tokens                {stats['supervised_tokens']}")
        print(f"  with no trained-on token         {stats['unsupervised']}")
    if "longer_than_row" in stats:
        print(
            f"  longer than a row of {stats['row_tokens']} tokens  {stats['longer_than_row']} "
            "(bestfit cuts them; truncate='keep' leaves them in the buffer, as nanochat does)"
        )
    return 0


def _cmd_render(args: argparse.Namespace) -> int:
    from .shards import render_shards
    from .tokenizer import Tokenizer

    shards = render_shards(build_task(args.task, args.data_dir),
                           Tokenizer.from_directory(args.tokenizer), args.out_dir,
                           max_tokens=args.max_tokens, truncate=args.truncate,
                           rows_per_shard=args.rows_per_shard, num_proc=args.num_proc)
    print(f"{args.out_dir}: {len(shards)} conversations rendered (key {shards.key['hash'][:12]})")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    task = build_task(args.task, args.data_dir)
    if not 0 <= args.start < max(len(task), 1):
        raise ValueError(f"--start {args.start} is outside the task's {len(task)} conversations")
    tokenizer, chat_format = _rendering(args)
    for k, conversation in enumerate(_iter_task(task, args.start, args.n, f"show {args.task}")):
        if k:
            print()
        print(f"=== {args.task} [{args.start + k}] of {len(task)} ===")
        print(format_conversation(conversation, args.max_chars))
        if tokenizer is not None:
            ids, mask = tokenizer.render_conversation(conversation, chat_format=chat_format)
            print(f"--- {len(ids)} tokens, {sum(mask)} trained on ({_format_name(chat_format)}) ---")
            print(format_tokens(tokenizer, ids, mask, use_color()))
    return 0


# ------------------------------------------------------------------- bench


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import missing_requirements, report

    missing = missing_requirements()
    if missing:
        # Before anything is timed: a run that fails at its end wastes minutes.
        print(
            "convpack bench: error: missing "
            + ", ".join(package for package, _ in missing)
            + ". Install them with: pip install "
            + " ".join(package for package, _ in missing),
            file=sys.stderr,
        )
        return 2
    command = (
        "convpack bench"
        + (" --quick" if args.quick else "")
        + (f" --out {args.out}" if args.out != "bench-out" else "")
    )
    rows, notes = report.run_suite(args.quick, log=lambda s: print(s, file=sys.stderr))
    paths = report.write_report(rows, notes, args.out, command, quick=args.quick)
    print(report.markdown(rows, notes, command, quick=args.quick))
    print("wrote " + ", ".join(paths))
    return 0


# -------------------------------------------------------------------- demo


def cache_dir() -> str:
    """Where the demo caches its tokenizer.

    Returns:
        ``$CONVPACK_CACHE_DIR``, else ``$XDG_CACHE_HOME/convpack``, else
        ``~/.cache/convpack`` (not created here).
    """
    env = os.environ.get("CONVPACK_CACHE_DIR")
    if env:
        return env
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "convpack")


def demo_tokenizer(texts: Sequence[str], vocab_size: int = DEMO_VOCAB_SIZE) -> tuple:
    """A tokenizer trained on ``texts``, cached by their digest.

    The cache entry is a directory under ``cache_dir()`` named after a hash
    of convpack's version, ``vocab_size``, the split pattern and the texts;
    a damaged entry is rebuilt.

    Args:
        texts: the training texts.
        vocab_size: the vocabulary size, chat special tokens included.

    Returns:
        ``(tokenizer, directory, from_cache)``: the ``convpack.Tokenizer``,
        its cache directory, and True when it was loaded rather than trained.

    Raises:
        ValueError: from ``Tokenizer.train_from_iterator`` (e.g. a
            ``vocab_size`` below 256 plus the special tokens).
        OSError: the cache directory cannot be written.
    """
    import convpack

    digest = hashlib.sha256(
        f"{convpack.__version__}\0{vocab_size}\0{convpack.SPLIT_PATTERN}".encode()
    )
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\0")
    directory = os.path.join(cache_dir(), f"demo-tokenizer-{digest.hexdigest()[:16]}")
    if os.path.isdir(directory):
        try:
            return convpack.Tokenizer.from_directory(directory), directory, True
        except (OSError, ValueError):
            pass  # a damaged cache entry is rebuilt below
    tokenizer = convpack.Tokenizer.train_from_iterator(texts, vocab_size)
    tmp = f"{directory}.tmp-{os.getpid()}"
    tokenizer.save(tmp, nanochat_files=False)  # a cache for the demo; nanochat never reads it
    try:
        os.replace(tmp, directory)
    except OSError:  # another process won the race; its copy is as good
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer, directory, False


def _sample_mixture(quick: bool) -> tuple:
    """The demo's mixture and one line per component: ``name: count`` for a
    task taken once, ``name xK: K x n = K*n`` for one taken K times, so the
    lines add up to the mixture's length."""
    from tasks.common import TaskMixture
    from tasks.customjson import CustomJSON
    from tasks.humaneval import HumanEval
    from tasks.spellingbee import SimpleSpelling, SpellingBee

    size = 300 if quick else 1000
    # (name, task, times it enters the mixture)
    parts = [
        (f"SpellingBee(size={size})", SpellingBee(size=size, split="train"), 1),
        (f"SimpleSpelling(size={size})", SimpleSpelling(size=size, split="train"), 1),
        ("HumanEval()", HumanEval(), 1),
        ("CustomJSON(bundled sample)", CustomJSON(sample_path()), 2),
    ]
    tasks = [task for _, task, times in parts for _ in range(times)]
    lines = [
        f"{name}: {len(task)}"
        if times == 1
        else f"{name} x{times}: {times} x {len(task)} = {times * len(task)}"
        for name, task, times in parts
    ]
    return TaskMixture(tasks), lines


def _fraction(stats: Any, name: str) -> Optional[float]:
    for key in (f"{name}_fraction", name, f"{name}_frac"):
        if isinstance(stats, dict) and key in stats:
            return float(stats[key])
        if not isinstance(stats, dict) and hasattr(stats, key):
            return float(getattr(stats, key))
    return None


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _time_batches(batches: Any, n: int, desc: str) -> tuple:
    """Draws ``n`` batches; returns (tokens per second, the batches)."""
    import math

    tokens = 0
    drawn = []
    start = time.perf_counter()
    for batch in _progress(batches, n, desc):
        tokens += math.prod(batch[0].shape)  # torch tensors and numpy arrays alike
        drawn.append(batch)
        if len(drawn) == n:
            break
    return tokens / (time.perf_counter() - start), drawn


def _same(ours: list, theirs: list) -> bool:
    import torch

    return len(ours) == len(theirs) and all(
        x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y)
        for a, b in zip(ours, theirs)
        for x, y in zip(a[:2], b[:2])
    )


def _torch_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def format_tokens(tokenizer: Any, ids: Sequence[int], mask: Sequence[int], color: bool) -> str:
    """One conversation's tokens with their loss mask, for a person to read.

    Args:
        tokenizer: a ``convpack.Tokenizer``.
        ids, mask: as ``render_conversation`` returns them.
        color: True for the tokenizer's ``visualize_tokenization`` (tokens
            joined by ``|``, green where trained on, red where not); False
            for plain text: one line per run of equal mask values, starting
            with ``train |`` (mask 1) or ``   -  |`` (mask 0), the tokens
            joined by ``|`` and newlines inside a token written ``\\n``.

    Returns:
        The text, without a trailing newline.

    Raises:
        ValueError: ``ids`` and ``mask`` differ in length.
    """
    ids, mask = [int(i) for i in ids], [int(m) for m in mask]
    if len(ids) != len(mask):
        raise ValueError(f"ids and mask differ in length: {len(ids)} != {len(mask)}")
    if color:
        return tokenizer.visualize_tokenization(ids, mask)
    lines: list = []
    run: list = []
    for k, (token, m) in enumerate(zip(ids, mask)):
        run.append(tokenizer.decode([token]).replace("\n", "\\n"))
        if k + 1 == len(ids) or mask[k + 1] != m:
            lines.append(("train | " if m else "   -  | ") + "|".join(run))
            run = []
    return "\n".join(lines)


def _cmd_demo(args: argparse.Namespace) -> int:
    import convpack

    from .bench.baseline import PythonRenderer, bestfit_batches, padded_batches, stream_batches
    from .bench.common import cold_cache, compare, cpu_count, tiktoken_twin
    from .bench.texts import iter_texts

    started = time.perf_counter()
    threads = cpu_count()
    print(
        f"convpack {convpack.__version__} demo: render and pack a bundled sample mixture "
        f"({threads} CPU threads; nothing is downloaded)"
    )

    # 1. The sample mixture, materialised so both paths time the data path
    # and not the tasks' example generation.
    print("\n[1/5] sample mixture")
    mixture, parts = _sample_mixture(args.quick)
    convs = list(_iter_task(mixture, 0, len(mixture), "loading conversations"))
    for line in parts:
        print(f"  {line}")
    print(f"  TaskMixture (shuffled, seed 42): {len(convs)} conversations")

    # 2. A tokenizer trained on the mixture's own text.
    print("\n[2/5] tokenizer")
    texts = [t for c in convs for t in iter_texts(c)]
    t0 = time.perf_counter()
    tokenizer, directory, cached = demo_tokenizer(texts)
    how = (
        "loaded from cache"
        if cached
        else f"trained on the mixture's text ({sum(map(len, texts)) / 1e3:.0f} K characters)"
    )
    print(
        f"  {how} in {time.perf_counter() - t0:.2f} s: vocab {tokenizer.get_vocab_size()} "
        f"(nanochat split pattern, {len(convpack.CHAT_SPECIAL_TOKENS)} chat special tokens)"
    )
    print(f"  cached at {directory}")

    try:
        enc = tiktoken_twin(tokenizer, "demo")
        python = PythonRenderer.from_tiktoken(enc)
        baseline_name = "pure Python (tiktoken per message, Python lists)"
    except ImportError:  # tiktoken is not in the base install
        python = PythonRenderer.from_tokenizer(tokenizer)
        baseline_name = (
            "pure Python (convpack encode per message, Python lists; tiktoken not installed)"
        )

    # 3. Rendering.
    print(f"\n[3/5] render_conversation: convpack vs {baseline_name}")
    expected = [
        python.render_conversation(c) for c in _progress(convs, len(convs), "pure-Python render")
    ]
    ids, mask, offsets = tokenizer.render_conversations(convs, num_threads=threads)
    same = all(
        ids[offsets[i] : offsets[i + 1]].tolist() == e[0]
        and mask[offsets[i] : offsets[i + 1]].tolist() == e[1]
        for i, e in enumerate(expected)
    )

    # Best of three alternating rounds, convpack's piece cache emptied each
    # time (nothing carried over from the last round).
    def render_all() -> Any:
        tok = cold_cache(tokenizer)
        return lambda: tok.render_conversations(convs, num_threads=threads)

    ours_rate, py_rate = compare(
        render_all, lambda: [python.render_conversation(c) for c in convs], len(convs), repeats=3
    )
    print(
        f"  {len(convs)} conversations, {len(ids)} tokens, {100 * mask.mean():.1f}% of them supervised"
    )
    print(
        f"  convpack  {ours_rate:12,.0f} conversations/s   (render_conversations, {threads} threads)"
    )
    print(
        f"  Python    {py_rate:12,.0f} conversations/s   -> {ours_rate / py_rate:.1f}x; "
        f"identical ids and masks: {'yes' if same else 'NO'}"
    )

    # 4. Packing, every mode.
    batch_size, seq_len, n_batches = 8, 512, (20 if args.quick else 100)
    print(
        f"\n[4/5] DataGenerator, batch_size={batch_size}, seq_len={seq_len}, {n_batches} batches per mode, on CPU"
    )
    has_torch = _torch_available()
    if not has_torch:
        print(
            "  torch is not installed: batches come out as numpy arrays (output='numpy'), "
            "and the Python path, which builds torch tensors, is not timed; "
            "pip install torch for tensors"
        )
    generator_cls = getattr(convpack, "DataGenerator", None)
    if generator_cls is None:
        print("  convpack.DataGenerator is not in this build; skipped")
    else:
        render = python.render_conversation
        bos = tokenizer.get_bos_token_id()
        baselines = {
            "padded": lambda: padded_batches(
                convs, render, batch_size, tokenizer.encode_special("<|assistant_end|>")
            ),
            "stream": lambda: stream_batches(convs, render, batch_size, seq_len),
            "bestfit": lambda: bestfit_batches(convs, render, batch_size, seq_len, bos),
        }
        header = f"  {'mode':8} {'inputs':>12} {'pad':>6} {'crop':>6} {'superv.':>7} {'convpack tok/s':>15} {'Python tok/s':>13} {'ratio':>6}  same"
        table = []  # printed once every mode is timed, so progress lines stay above it
        for mode in ("padded", "stream", "bestfit", "varlen"):
            # padded is nanochat's SFT collate: rows as long as the batch's longest.
            gen = generator_cls(
                convs,
                cold_cache(tokenizer),
                batch_size=batch_size,
                seq_len=None if mode == "padded" else seq_len,
                mode=mode,
                device="cpu",
                rank=0,
                world_size=1,
                **({} if has_torch else {"output": "numpy"}),
            )
            try:
                ours_tps, drawn = _time_batches(gen, n_batches, f"{mode} (convpack)")
                stats = gen.stats
            finally:
                gen.close()
            shape = "x".join(map(str, drawn[0][0].shape))
            if mode in baselines and has_torch:
                py_tps, py_drawn = _time_batches(baselines[mode](), n_batches, f"{mode} (Python)")
                py_col, ratio, same_col = (
                    f"{py_tps:13,.0f}",
                    f"{ours_tps / py_tps:5.1f}x",
                    ("yes" if _same(drawn, py_drawn) else "no"),
                )
            else:
                why = "(no nanochat equivalent)" if mode not in baselines else "(needs torch)"
                py_col, ratio, same_col = f"{'-':>13}", f"{'-':>6}", why
            table.append(
                f"  {mode:8} {shape:>12} {_pct(_fraction(stats, 'pad')):>6} {_pct(_fraction(stats, 'crop')):>6} "
                f"{_pct(_fraction(stats, 'supervised')):>7} {ours_tps:15,.0f} {py_col} {ratio:>6}  {same_col}"
            )
        print(header)
        print("\n".join(table))
        print(
            "  pad/crop: share of row positions that are padding / tokens cropped away; "
            "superv.: share of targets trained on; same: every batch equal to the Python path's"
        )

    # 5. One conversation, coloured by mask.
    color = use_color(sys.stdout)
    legend = (
        "green = trained on (mask 1), red = not (mask 0)"
        if color
        else "one line per span, 'train' = trained on (mask 1), '-' = not (mask 0)"
    )
    print(f"\n[5/5] one conversation's tokens: {legend}")
    # The shortest one with a tool call shows every kind of span.
    with_tools = [c for c in convs if any(isinstance(m["content"], list) for m in c["messages"])]
    pick = min(with_tools or convs, key=lambda c: sum(len(t) for t in iter_texts(c)))
    ids1, mask1 = tokenizer.render_conversation(pick)
    print(format_tokens(tokenizer, ids1, mask1, color))
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    return 0


# -------------------------------------------------------------------- main


def build_parser() -> argparse.ArgumentParser:
    """The ``convpack`` command's argument parser (commands ``demo``, ``render``,
    ``stats``, ``show`` and ``bench``).

    Returns:
        An ``argparse.ArgumentParser``; ``command`` is None when no command
        was given.
    """
    parser = argparse.ArgumentParser(
        prog="convpack",
        description="convpack: chat conversations to training batches (Rust BPE, rendering with "
        "loss masks, packing for PyTorch). Without a command, runs the demo.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"convpack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="the main job on a bundled sample: train a tokenizer, render, pack, time it "
        "against the pure-Python path",
    )
    demo.add_argument("--quick", action="store_true", help="a smaller sample (a few seconds)")

    for name, help_text in (
        ("stats", "dataset statistics of a task"),
        ("show", "print example conversations of a task"),
    ):
        p = sub.add_parser(
            name, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}. {_TASK_HELP}"
        )
        p.add_argument(
            "task", metavar="TASK", help="e.g. smoltalk:split=train, spellingbee:size=1000"
        )
        p.add_argument(
            "--data-dir", default=None, help="local data directory (else $CONVPACK_DATA_DIR)"
        )
        p.add_argument(
            "--tokenizer", default=None, metavar="DIR",
            help="a tokenizer directory (convpack's, nanochat's or a Hugging Face one with "
            "tokenizer.json): "
            + ("count tokens, trained-on tokens and conversations with none; with --seq-len, "
               "the conversations longer than a best-fit row" if name == "stats"
               else "also print each conversation's tokens with their loss mask"),
        )
        p.add_argument(
            "--chat-format", default=None, metavar="FORMAT",
            help="with --tokenizer: 'nanochat', 'tokenizer' (the tokenizer's chat_template) or "
            "a Jinja template file; default: the tokenizer's chat_template if it has one, "
            "else nanochat's",
        )
        if name == "stats":
            p.add_argument("--limit", type=int, default=None, help="only the first N conversations")
            p.add_argument("--json", action="store_true", help="print the numbers as JSON")
            p.add_argument(
                "--seq-len", type=int, default=None, metavar="T",
                help="rows of T + 1 tokens (nanochat's max_seq_len); needs --tokenizer",
            )
        else:
            p.add_argument("-n", type=int, default=3, help="how many conversations (default 3)")
            p.add_argument(
                "--start", type=int, default=0, help="index of the first one (default 0)"
            )
            p.add_argument(
                "--max-chars", type=int, default=1000, help="cut texts longer than this (0: never)"
            )

    render = sub.add_parser(
        "render", help="render a task once into Parquet shards that DataGenerator reads",
        description=f"Render a task once into Parquet shards (convpack.render_shards). {_TASK_HELP}")
    render.add_argument("task", metavar="SOURCE", help="a task, e.g. smoltalk:split=train")
    render.add_argument("out_dir", metavar="OUT_DIR", help="shard directory (resumed if there)")
    render.add_argument("--tokenizer", required=True, help="a convpack or nanochat tokenizer dir")
    render.add_argument("--data-dir", default=None, help="local data directory")
    render.add_argument("--max-tokens", type=int, default=2048,
                        help="tokens per conversation (with --truncate turns: per piece, the "
                        "generator's row: seq_len + 1 for bestfit and padded)")
    render.add_argument("--truncate", choices=("tail", "turns"), default="tail",
                        help="cut a long conversation's end (tail) or split it at exchanges (turns)")
    render.add_argument("--rows-per-shard", type=int, default=16384)
    render.add_argument("--num-proc", type=int, default=1, help="processes (default 1)")

    bench = sub.add_parser(
        "bench", help="benchmarks against tiktoken and the pure-Python path; markdown and plots"
    )
    bench.add_argument("--out", default="bench-out", help="output directory (default bench-out)")
    bench.add_argument(
        "--quick", action="store_true", help="small inputs, short timings (a smoke run)"
    )
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``convpack`` console script.

    Args:
        argv: the arguments after the program name (default ``sys.argv[1:]``);
            none runs the demo.

    Returns:
        The exit status: 0 on success, 1 when a benchmark's outputs differ
        from its baseline's, 2 on bad input, missing data or a missing
        extra (the message on stderr says what to do), 130 on Ctrl-C.
        ``--help`` and argument errors exit through ``SystemExit`` as
        argparse does.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["demo"])
    handler = {"demo": _cmd_demo, "stats": _cmd_stats, "show": _cmd_show, "bench": _cmd_bench,
               "render": _cmd_render}[args.command]
    from tasks.data import DatasetNotFoundError

    from .bench.common import BenchmarkMismatch

    try:
        return handler(args)
    except BenchmarkMismatch as exc:
        print(f"convpack bench: outputs differ, nothing timed: {exc}", file=sys.stderr)
        return 1
    except (DatasetNotFoundError, FileNotFoundError, ImportError, ValueError) as exc:
        print(f"convpack {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
