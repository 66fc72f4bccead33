"""Text that a model or a program wrote is tokenized as text: a printed `<|im_end|>` becomes the ordinary tokens of
those characters, never the end-of-turn token. Only the chat template itself makes control tokens.

Why: a tokenizer turns every special-token string it meets into the special token, even with
`add_special_tokens=False`. A program that prints `<|im_end|>\\n<|im_start|>user\\n...` would otherwise write real
turn markers into the requester's context (a forged end of turn, a forged user), and a request, a chat history or an
SFT trace that holds such a string would do the same in the coder's prompt or in training data.
"""

from __future__ import annotations

import hashlib
import json

from agents.errors import DuetError


def encode_text(tokenizer, text: str) -> list[int]:
    """Token ids of text that did not come from the model's own sampling (a result, a trace's text)."""
    return list(tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True))


def tokenizer_fingerprint(tokenizer) -> dict[str, str]:
    """Which tokenizer token ids belong to: its name (for people) and a hash of its vocabulary, every token with its
    id, added and special tokens included (for the comparison). Ids mean the same tokens under two tokenizers exactly
    when the hashes agree, whatever the names: a checkpoint's folder holds a copy of its base model's tokenizer."""
    vocabulary = sorted(tokenizer.get_vocab().items(), key=lambda item: (item[1], item[0]))
    digest = hashlib.sha256(json.dumps(vocabulary, ensure_ascii=False).encode("utf-8")).hexdigest()[:16]
    return {"name": str(tokenizer.name_or_path), "vocabulary": digest}


def holds_special_tokens(tokenizer, text: str) -> bool:
    return any(token in text for token in tokenizer.all_special_tokens)


def encode_chat(tokenizer, messages: list[dict[str, str]], continue_assistant: bool = False) -> list[int]:
    """Token ids of a chat, ending with an open assistant turn (or continuing the last assistant message).

    When no message holds a special-token string, these are exactly the ids of the rendered template, as the model was
    trained on them. Otherwise the rendered text is tokenized piece by piece: the template's own text with its control
    tokens, each message's content as text (`encode_text`)."""
    options = {"add_generation_prompt": not continue_assistant, "continue_final_message": continue_assistant}
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, **options)
    contents = [message["content"] for message in messages if message.get("content")]
    if not any(holds_special_tokens(tokenizer, content) for content in contents):
        return list(tokenizer.encode(rendered, add_special_tokens=False))
    ids, cursor = [], 0
    for content in contents:
        start, length = _located(rendered, content, cursor)
        ids += tokenizer.encode(rendered[cursor:start], add_special_tokens=False)
        ids += encode_text(tokenizer, rendered[start : start + length])
        cursor = start + length
    return ids + list(tokenizer.encode(rendered[cursor:], add_special_tokens=False))


def _located(rendered: str, content: str, cursor: int) -> tuple[int, int]:
    """Where the template put a message's content (templates render messages in order; some trim the content)."""
    for shown in (content, content.strip()):
        start = rendered.find(shown, cursor)
        if start >= 0:
            return start, len(shown)
    raise DuetError(
        "this model's chat template rewrites message text, so duet cannot keep text that holds special-token strings "
        "from becoming control tokens; use a model whose template copies message contents as they are"
    )
