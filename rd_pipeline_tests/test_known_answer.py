"""The known-answer experiment at its small size: the real pipeline learns a task whose answers are known."""

from __future__ import annotations

import importlib

import pytest

from rd_pipeline.cli import main as rd_main


def _load_script(name: str):
    """``rd_pipeline.cli.<name>``, imported when a test needs it (known_answer sets OMP_NUM_THREADS on import)."""
    return importlib.import_module(f"rd_pipeline.cli.{name}")


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (
            ["experiment", "known-answer"],
            ["--task", "--size", "--seed", "--teachers", "--rewards", "--keep", "--out"],
        ),
        (["experiment", "known-answer-grid"], ["--seeds", "--jobs", "--work", "--chart", "--from-json"]),
    ],
)
def test_rd_experiment_help_lists_the_experiment_options(command, options, capsys):
    with pytest.raises(SystemExit) as exited:
        rd_main([*command, "--help"])
    assert exited.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"usage: rd {' '.join(command)} ")
    assert all(option in printed for option in options), printed


def test_paired_interval_and_t_quantiles():
    known_answer = _load_script("known_answer")
    assert known_answer.t95(2) == pytest.approx(4.303)
    assert known_answer.t95(30) == pytest.approx(2.042, abs=0.003)
    assert known_answer.t95(120) == pytest.approx(1.980, abs=0.003)
    same = known_answer.paired_difference({"a": True, "b": False}, {"a": True, "b": False})
    assert (same["mean"], same["low"], same["high"]) == (0.0, 0.0, 0.0)
    worse = known_answer.paired_difference({p: False for p in "abcd"}, {p: True for p in "abcd"})
    assert worse["mean"] == -1.0 and worse["high"] == -1.0


def test_every_task_has_distinct_right_answers():
    known_answer = _load_script("known_answer")
    for task in known_answer.TASKS:
        train, held, pool = known_answer.split_problems(task, known_answer.SIZES["small"], seed=0)
        assert not set(train) & set(held) and not (set(train) | set(held)) & set(pool)
        assert all(p.response == f"The answer is {p.answer}." for p in train[:5])


def test_rl_validation_is_none_without_a_curve():
    known_answer = _load_script("known_answer")
    assert known_answer.validation_summary({}) is None
    curve = [
        {"step": 0, "agreement": 0.5, "mean_reward": 0.1},
        {"step": 4, "agreement": 0.6, "mean_reward": 0.3},
    ]
    found = known_answer.validation_summary({"validation": {"curve": curve, "selected_step": 4}})
    assert (found["start_agreement"], found["selected_agreement"], found["selected_mean_reward"]) == (
        0.5,
        0.6,
        0.3,
    )


def test_likelihood_pair_accuracy_ranks_by_mean_response_logprob(tiny_base):
    """Each pair counts when the first response is likelier per token; swapping every pair gives the rest, and a
    pair of equal responses (a tie) never counts."""
    from rd_pipeline.cli.known_answer.likelihood import likelihood_pair_accuracy

    user = {"role": "user", "content": "Which is larger, 37 or 52?"}
    answers = [f"The answer is {n}." for n in (52, 37, 12, 99, 5)]
    conversations = [[user, {"role": "assistant", "content": answer}] for answer in answers]
    pairs = [(a, b) for a in conversations for b in conversations if a is not b]
    forward = likelihood_pair_accuracy(tiny_base, pairs)
    assert forward == pytest.approx(0.5)  # every ordered pair and its swap: one of the two counts
    first = likelihood_pair_accuracy(tiny_base, pairs[:4])
    swapped = likelihood_pair_accuracy(tiny_base, [(b, a) for a, b in pairs[:4]])
    assert first + swapped == pytest.approx(1.0)
    assert likelihood_pair_accuracy(tiny_base, [(conversations[0], conversations[0])]) == 0.0
    assert likelihood_pair_accuracy(tiny_base, []) is None


@pytest.mark.slow
def test_pipeline_learns_the_known_answer_task(tmp_path, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    known_answer = _load_script("known_answer")
    result = known_answer.run_experiment(tmp_path, "small", seed=0, teachers={"weak": 0.4})
    print(known_answer.result_text(result))
    runs = {run["rewards"]: run for run in result["runs"]}
    assert list(runs) == list(known_answer.REWARD_SETTINGS)
    first = runs[next(iter(runs))]
    figures = first["figures"]
    # The teacher was trained to be noisy, and the vote makes better labels than its single samples.
    assert figures["teacher_samples"] == 9 * figures["train_prompts"]
    assert 0.25 <= figures["teacher_single_sample_accuracy"] <= 0.85
    assert figures["vote_label_accuracy"] > figures["teacher_single_sample_accuracy"]
    # The teacher's own likelihood ranks the held-out gold pairs better than chance.
    assert figures["likelihood_gold_pair_accuracy"]["teacher"] > 0.5
    # SFT's guard: the shipped student is the best validated step (the base student is step 0), and on the eval
    # prompts it is not below the base student beyond the paired interval. (Whether SFT beats the base student
    # at all is the grid's question: at this size a validation share of 16 prompts decides it.)
    sft_validation = figures["sft_validation"]
    assert sft_validation["selected_agreement"] >= sft_validation["start_agreement"]
    assert max(point["step"] for point in sft_validation["curve"]) > 0
    assert figures["sft_minus_base"]["high"] >= 0
    # Each further reward setting retrained only the RL student: same reward model, another RL student.
    for run in runs.values():
        assert run["figures"]["reward_model_version"] == figures["reward_model_version"]
        assert run["figures"]["accuracy"]["sft_student"] == figures["accuracy"]["sft_student"]
        assert run["figures"]["rl_minus_sft"]["n"] == figures["eval_prompts"]
    assert len({run["figures"]["rl_student_version"] for run in runs.values()}) == len(runs)
