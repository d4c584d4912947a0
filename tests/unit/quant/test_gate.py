"""The gate's verdict, the refusal `serve` makes from a manifest, and how answers are scored."""

import json

import pytest

from warmstart.quant.answers import PromptFileError, agreement, correct, read_prompts, task_score
from warmstart.quant.gate import Gate, ScoreChange, judge, refusal


def test_gate_defaults_are_llama_cpps_llama3_8b_q4_k_m_figures():
    gate = Gate()
    assert (gate.max_kld, gate.min_top1) == (0.031, 0.919)
    assert judge(gate, kld=0.0014, top1=0.977, score=ScoreChange(100, 2, 1)) == []
    reasons = judge(gate, kld=0.34, top1=0.68, score=ScoreChange(100, 20, 2))
    assert len(reasons) == 3 and "mean KLD 0.3400 > 0.031" in reasons[0]
    assert "18.0% below the base's (at most 3.0%; 20 prompts lost, 2 gained, p = 0.000)" in reasons[2]
    assert judge(gate, kld=float("nan"), top1=0.99)  # NaN never passes


def test_a_score_drop_counts_only_beyond_chance():
    change = ScoreChange.of([True, True, False, True], [False, True, True, False])
    assert (change.prompts, change.lost, change.gained, change.drop) == (4, 2, 1, 0.25)
    assert ScoreChange(100, 8, 4).p_value == pytest.approx(0.194, abs=1e-3)  # 4 points down: noise at 100 prompts
    assert judge(Gate(), kld=0.004, top1=0.96, score=ScoreChange(100, 8, 4)) == []
    assert ScoreChange(100, 12, 2).p_value < 0.05
    assert judge(Gate(), kld=0.004, top1=0.96, score=ScoreChange(100, 12, 2))


def test_refusal_of_failed_and_never_evaluated_quantized_models():
    failed = {"passed": False, "reasons": ["mean KLD 0.3 > 0.031"], "against": "base"}
    assert "failed its accuracy gate against base (mean KLD 0.3 > 0.031)" in refusal("m", None, failed, False)
    assert refusal("m", None, failed, allow_unverified=True) is None
    assert "never evaluated" in refusal("m", {"type": "q8_0"}, None, False)
    assert refusal("m", {"type": "q8_0"}, {"passed": True}, False) is None
    assert refusal("m", None, None, False) is None  # a model from elsewhere, never evaluated: served as always


def test_answers_are_scored_by_whole_word_references():
    assert correct("The capital of France is Paris.", ["Paris"])
    assert not correct("Parisian food", ["Paris"])
    assert correct("It has 8 legs", ["eight", "8"])
    assert agreement(["Paris.", "Two"], ["paris", "three"]) == 0.5


def test_shipped_prompts_are_100_with_references(tmp_path):
    from warmstart.quant.answers import default_prompts

    prompts = read_prompts(default_prompts())
    assert len(prompts) == 100 and all(p.references and p.chat for p in prompts)
    assert task_score(["Paris"] + [""] * 99, prompts) == 0.01


@pytest.mark.parametrize("line,needle", [
    ("not json", ":1: not JSON"),
    (json.dumps({"input": "x"}), "expected an OpenAI request body"),
    (json.dumps({"prompt": "x", "reference": 3}), '"reference" must be'),
])
def test_bad_prompt_files_name_the_line(tmp_path, line, needle):
    path = tmp_path / "p.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(PromptFileError, match=needle):
        read_prompts(path)


def test_prompt_file_sampling_fields_are_overridden(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"model": "x", "prompt": "Hi", "temperature": 1.5, "max_tokens": 5}) + "\n")
    [p] = read_prompts(path)
    assert p.body == {"prompt": "Hi", "max_tokens": 5} and p.references == ()
