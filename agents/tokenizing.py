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
import re

PLACEHOLDER = re.compile("(\ue000[0-9]+\ue001)")  # private-use characters around a message's index


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


def special_strings(tokenizer) -> set[str]:
    """Every token the tokenizer treats as special (`all_special_tokens` names only the few with a role: SmolLM2 has
    17 special added tokens and lists 3)."""
    return {*tokenizer.all_special_tokens, *(added.content for added in tokenizer.added_tokens_decoder.values() if added.special)}


def holds_special_tokens(tokenizer, text: str) -> bool:
    return any(token in text for token in special_strings(tokenizer))


def encode_chat(tokenizer, messages: list[dict[str, str]], continue_assistant: bool = False) -> list[int]:
    """Token ids of a chat, ending with an open assistant turn (or continuing the last assistant message).

    When no message holds a special-token string, these are exactly the ids of the rendered template, as the model was
    trained on them. Otherwise the template is rendered with a placeholder for each message's content, and the text is
    tokenized piece by piece: the template's own text with its control tokens, each content where its placeholder
    stands as text (`encode_text`). Placeholders, not a search for the contents: a content may equal the template's
    own text between two messages, and a template may drop a content or show it twice."""
    options = {"add_generation_prompt": not continue_assistant, "continue_final_message": continue_assistant}
    if not any(holds_special_tokens(tokenizer, message.get("content") or "") for message in messages):
        return list(tokenizer.encode(tokenizer.apply_chat_template(messages, tokenize=False, **options), add_special_tokens=False))
    marks = [f"\ue000{index}\ue001" for index in range(len(messages))]
    rendered = tokenizer.apply_chat_template([{**m, "content": mark} for m, mark in zip(messages, marks)], tokenize=False, **options)
    content = {mark: message.get("content") or "" for mark, message in zip(marks, messages)}
    ids = []
    for index, piece in enumerate(PLACEHOLDER.split(rendered)):
        ids += encode_text(tokenizer, content[piece]) if index % 2 else tokenizer.encode(piece, add_special_tokens=False)
    return ids
