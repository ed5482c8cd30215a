"""Chat prompts: our rendering is byte-identical to TRL's own for the prompt of an SFT and of a GRPO record, and
token-identical to the ids the trainers compute (the real Qwen tokenizer of ../shared; skipped when absent)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from dcv.chat import grpo_record, messages, prompt_ids, render_prompt, sft_record, template_kwargs_for
from dcv.errors import DcvError

QWEN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "qwen-tokenizer"
TEXT = ("Given a question and four options, please select the right answer.\nWhat is the molar weight of water?\n"
        "A. 18.015\nB. 16.043\nC. 44.01\nD. 32.0")
CHATML = ("{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


@pytest.fixture(scope="module")
def qwen():
    if not QWEN.is_dir():
        pytest.skip("../shared/data/qwen-tokenizer not present")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(QWEN))


def test_qwen3_template_is_a_thinking_template(qwen):
    assert template_kwargs_for(qwen) == {"enable_thinking": False}
    plain = copy.deepcopy(qwen)
    plain.chat_template = CHATML
    assert template_kwargs_for(plain) == {}


@pytest.mark.parametrize("system", [None, "You are an expert chemist."])
@pytest.mark.parametrize("thinking_off", [True, False])
def test_rendered_prompt_is_what_trl_renders(qwen, system, thinking_off):
    from trl.data_utils import _tokenize, apply_chat_template, common_prefix_length

    kw = template_kwargs_for(qwen) if thinking_off else {}
    ours = render_prompt(qwen, TEXT, chat=True, system=system, template_kwargs=kw)
    assert ours.startswith(("<|im_start|>system\n" + system) if system else "<|im_start|>user\n" + TEXT[:20])

    # GRPO: the prompt-only record, template kwargs from GRPOConfig.chat_template_kwargs
    grpo = grpo_record(TEXT, chat=True, system=system)
    assert apply_chat_template(grpo, qwen, **kw)["prompt"] == ours
    grpo_ids = qwen.apply_chat_template(conversation=[grpo["prompt"]], tools=None, chat_template=None,
                                        add_generation_prompt=True, tokenize=True, return_dict=True, **kw)["input_ids"]
    assert grpo_ids[0] == prompt_ids(qwen, ours, chat=True)

    # SFT: the prompt-completion record, template kwargs per row
    sft = sft_record(TEXT, "A", chat=True, system=system, template_kwargs=kw)
    assert ("chat_template_kwargs" in sft) == bool(kw)
    rendered = apply_chat_template(sft, qwen)
    assert rendered["prompt"] == ours
    row_kw = {"chat_template": None, "tools": None, **sft.get("chat_template_kwargs", {})}
    p_ids = _tokenize(qwen, sft["prompt"], add_generation_prompt=True, **row_kw)["input_ids"]
    full = _tokenize(qwen, sft["prompt"] + sft["completion"], **row_kw)["input_ids"]
    assert p_ids == prompt_ids(qwen, ours, chat=True)
    assert common_prefix_length(p_ids, full) == len(p_ids)  # the loss starts right after our prompt
    completion = qwen.decode(full[len(p_ids):])
    if thinking_off:
        assert ours.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and completion == "A<|im_end|>\n"
    else:  # Qwen3 default: SFT would train the model to write the empty think block itself
        assert ours.endswith("<|im_start|>assistant\n") and completion == "<think>\n\n</think>\n\nA<|im_end|>\n"


def test_plain_text_prompts_and_standard_records(qwen):
    from trl.data_utils import maybe_apply_chat_template

    assert render_prompt(qwen, TEXT, chat=False) == TEXT
    assert grpo_record(TEXT, chat=False) == {"prompt": TEXT}
    rec = sft_record(TEXT, " A", chat=False)
    assert rec == {"prompt": TEXT, "completion": " A"} and maybe_apply_chat_template(rec, qwen) == rec
    assert prompt_ids(qwen, TEXT, chat=False) == qwen(TEXT)["input_ids"]


def test_errors():
    class NoTemplate:
        chat_template = None
        name_or_path = "tiny-tok"

    with pytest.raises(DcvError, match=r"data.chat: a chat template is asked for, but the tokenizer \(tiny-tok\) has none"):
        render_prompt(NoTemplate(), "q", chat=True, where="data.chat")
    with pytest.raises(DcvError, match="system message needs the chat template"):
        render_prompt(NoTemplate(), "q", chat=False, system="s")
    with pytest.raises(DcvError, match="system message needs the chat template"):
        sft_record("q", "A", chat=False, system="s")
    assert messages("q", "s") == [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}]


SCIKNOWEVAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "sciknoweval-chem-l3"


def test_one_chat_row_gives_the_same_prompt_to_sft_grpo_and_evaluation(qwen):
    """A SciKnowEval row made a chat row (what prepare-data writes with data.target.chat): the evaluation prompt
    (its `prompt`, encoded without added special tokens), TRL's rendering of the SFT record and of the GRPO record
    are one string and one token sequence; the reward reads the chat answer by the row's rule."""
    if not SCIKNOWEVAL.is_dir():
        pytest.skip("../shared/data/sciknoweval-chem-l3 not present")
    from trl.data_utils import _tokenize, apply_chat_template

    from dcv.arms.data import check_row, rl_records, sft_records, template_kwargs
    from dcv.arms.rewards import correctness_reward
    from dcv.batching import encode
    from dcv.chat import chat_row, rows_are_chat
    from dcv.sciknoweval import load_split

    train, _ = load_split(SCIKNOWEVAL, ["molecular_property_calculation"], 4, seed=0, chat=True)
    row = check_row(chat_row(qwen, train[0], "You are an expert chemist."), "row")
    assert rows_are_chat([row]) and row["answer_rule"] == "letter"
    kw = template_kwargs([row])
    assert kw == {"enable_thinking": False}
    eval_ids = encode(qwen, [row["prompt"]], special=False)[0]

    sft = sft_records([row], "letter")[0]
    assert sft["completion"] == [{"role": "assistant", "content": row["answer"]}]  # "B", no leading space
    assert apply_chat_template(sft, qwen)["prompt"] == row["prompt"]
    row_kw = {"chat_template": None, "tools": None, **sft["chat_template_kwargs"]}
    assert _tokenize(qwen, sft["prompt"], add_generation_prompt=True, **row_kw)["input_ids"] == eval_ids

    grpo = rl_records([row])[0]
    assert apply_chat_template({"prompt": grpo["prompt"]}, qwen, **kw)["prompt"] == row["prompt"]
    ids = qwen.apply_chat_template(conversation=[grpo["prompt"]], tools=None, chat_template=None,
                                   add_generation_prompt=True, tokenize=True, return_dict=True, **kw)["input_ids"]
    assert ids[0] == eval_ids

    wrong = next(x for x in "ABCD" if x != row["answer"])
    comps = [[{"role": "assistant", "content": f"The answer is **{row['answer']}**."}],
             [{"role": "assistant", "content": wrong}]]
    cols = {k: [grpo[k]] * 2 for k in ("answer", "choices", "labels", "answer_rule")}
    assert correctness_reward([grpo["prompt"]] * 2, comps, **cols) == [1.0, 0.0]
