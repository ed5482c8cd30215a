"""The exact prompt string a model sees, with the tokenizer's chat template or as plain text, and the TRL records
built from the same inputs, so that evaluation, SFT and GRPO put one and the same prompt before the answer.

What TRL 1.16 does with a conversational record (read from its source):

- `SFTTrainer` (prompt-completion): prompt ids = `tok.apply_chat_template(prompt, tokenize=True, return_dict=True,
  add_generation_prompt=True, chat_template=None, tools=None, **row["chat_template_kwargs"])`; the full sequence is
  the same call on `prompt + completion` without the generation prompt; the loss covers the tokens after the
  common prefix of the two (`trl.data_utils.common_prefix_length`). Template kwargs come per row, from a
  `chat_template_kwargs` column (SFTConfig has no such field).
- `GRPOTrainer`: prompt ids = `tok.apply_chat_template(conversation=prompts, tools=None, chat_template=None,
  add_generation_prompt=True, tokenize=True, return_dict=True, **GRPOConfig.chat_template_kwargs)`.

As a string both are `tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, **kwargs)`,
which is what `render_prompt` returns; `tests/test_chat.py` checks it byte for byte against
`trl.data_utils.apply_chat_template` and token for token against the trainers' calls.

Thinking templates (Qwen3's, e.g. the tokenizer in ../shared): with the generation prompt the template ends at
`<|im_start|>assistant\n`, but rendering an assistant turn inserts an empty `<think>\n\n</think>\n\n` before its
content, so SFT would train the model to write that block while GRPO would sample from before it. With
`enable_thinking=False` the generation prompt itself ends with the empty block, and prompt and training sequence
agree. `template_kwargs_for` returns `{"enable_thinking": False}` for templates that read `enable_thinking` and
`{}` otherwise (Qwen2.5-Instruct's, which instead adds its default system prompt when none is given).
"""

from __future__ import annotations

from dcv.errors import DcvError


def has_chat_template(tok) -> bool:
    return bool(getattr(tok, "chat_template", None))


def template_kwargs_for(tok) -> dict:
    """Template kwargs that make the prompt alone a prefix of prompt + answer: no thinking for thinking templates."""
    return {"enable_thinking": False} if "enable_thinking" in (getattr(tok, "chat_template", None) or "") else {}


def messages(text: str, system: str | None = None) -> list[dict]:
    """The conversation of one user turn, after an optional system message."""
    head = [{"role": "system", "content": system}] if system is not None else []
    return head + [{"role": "user", "content": text}]


def _check(tok, chat: bool, system: str | None, where: str) -> None:
    if chat and not has_chat_template(tok):
        raise DcvError(f"{where}: a chat template is asked for, but the tokenizer "
                       f"({getattr(tok, 'name_or_path', '') or type(tok).__name__}) has none")
    if not chat and system is not None:
        raise DcvError(f"{where}: a system message needs the chat template (plain-text prompts have no roles)")


def render_prompt(tok, text: str, chat: bool, system: str | None = None, template_kwargs: dict | None = None,
                  where: str = "chat") -> str:
    """The prompt string the model sees: the chat template's rendering of the user message with the generation
    prompt (`chat`), else `text` itself. `where` names the setting in errors."""
    _check(tok, chat, system, where)
    if not chat:
        return text
    return tok.apply_chat_template(messages(text, system), tokenize=False, add_generation_prompt=True,
                                   **(template_kwargs or {}))


def prompt_ids(tok, rendered: str, chat: bool) -> list[int]:
    """Token ids of a rendered prompt: a chat rendering already holds its special tokens (a BOS, if the template
    has one), so none are added; plain text gets the tokenizer's own (as `dcv.probes.encode_prompts`)."""
    return tok(rendered, add_special_tokens=not chat)["input_ids"]


def grpo_record(text: str, chat: bool, system: str | None = None) -> dict:
    """A GRPO prompt record: conversational `{"prompt": [messages]}` or standard `{"prompt": text}`. Template kwargs
    go to `GRPOConfig(chat_template_kwargs=...)`."""
    if not chat:
        if system is not None:
            raise DcvError("chat: a system message needs the chat template (plain-text prompts have no roles)")
        return {"prompt": text}
    return {"prompt": messages(text, system)}


def sft_record(text: str, completion: str, chat: bool, system: str | None = None,
               template_kwargs: dict | None = None) -> dict:
    """An SFT prompt-completion record: conversational `{"prompt": [...], "completion": [{"role": "assistant",
    "content": completion}]}` (with a `chat_template_kwargs` column when there are kwargs: SFTTrainer reads them
    per row) or standard `{"prompt": text, "completion": completion}`. The completion is the assistant's text as
    given (a chat model's answer has no leading space: pass "B", not the toy's " B")."""
    if not chat:
        if system is not None:
            raise DcvError("chat: a system message needs the chat template (plain-text prompts have no roles)")
        return {"prompt": text, "completion": completion}
    rec = {"prompt": messages(text, system), "completion": [{"role": "assistant", "content": completion}]}
    if template_kwargs:
        rec["chat_template_kwargs"] = dict(template_kwargs)
    return rec


def rows_are_chat(rows: list[dict]) -> bool:
    """Whether target rows are chat rows (with `message`; all of them are, or none: prepare-data writes them so).
    Their `prompt` is a rendering that holds its special tokens: encode it without adding any (`prompt_ids`)."""
    chat = {r.get("message") is not None for r in rows}
    if len(chat) > 1:
        raise DcvError("target rows: some are chat rows (with 'message') and some are not")
    return chat == {True}


def chat_row(tok, row: dict, system: str | None = None, where: str = "chat") -> dict:
    """A target row for a chat model: `message` (the user turn as written), `system`, `template_kwargs`, and
    `prompt` = the rendering of that turn with the generation prompt, the one string that evaluation, forward KL,
    SFT (conversational record of `message`) and GRPO (the same) put before the answer."""
    kw = template_kwargs_for(tok)
    return {**row, "message": row["prompt"], "system": system, "template_kwargs": kw,
            "prompt": render_prompt(tok, row["prompt"], True, system, kw, where)}
