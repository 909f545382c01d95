"""Known-answer experiment: does the pipeline learn, measured against gold answers?

A small verifiable task in the GSM8K file format, so the real benchmark code prompts, extracts and grades it.
Tasks (``--task``): ``larger`` ("Which is larger, 37 or 52?", answered "The answer is 52."), ``smaller`` and
``sum`` ("What is 23 + 41?", with numbers below 50). Tiny Llama models with a digit-level BPE tokenizer are
first trained here with a plain supervised loop on problems that are not benchmark prompts; one model is
saved along the way as the weak base student and as each noisy teacher, when its sampled (temperature 1)
accuracy on a probe set first reaches the target of each (``TEACHER_TARGETS``: a weaker and a stronger
teacher). Then, for each teacher, the real pipeline runs on a fresh ``RD_HOME`` through Dagster
(``materialize_graph``, as ``rd materialize`` does): teacher samples, majority-vote labels, SFT, student
samples, reward pairs, reward model, RL, evaluation. It then runs again in the same ``RD_HOME`` for each
further RL reward setting (``REWARD_SETTINGS``: the paper's reward-model-only reward, and the reward model
combined with agreement with the majority vote); only the RL student is retrained and evaluated again.

Sampling follows the paper's shape: the teacher samples ``teacher_n`` responses per prompt at each of
``TEMPERATURES`` (3 x 3 = 9, about 10 per prompt), the SFT student ``student_n`` at each (10 x 3 = 30).
Evaluation decodes greedily (the pipeline's ``eval.temperature`` 0) on held-out eval prompts, the teacher too.

Everything is measured against the gold answers:

- majority-vote label accuracy vs single-sample accuracy of the teacher (all its samples, and per temperature);
- accuracy (greedy, held-out eval prompts) of the teacher, the base, SFT and RL students; for RL minus SFT a
  95% interval over the eval prompts: the mean paired difference of per-prompt correctness with a t interval
  (prompt-level paired t interval; the same prompts are answered by both students);
- reward-model pairwise accuracy on gold (correct, incorrect) response pairs of prompts held out of reward
  training, and the pipeline's own held-out accuracy (against pseudo-labels);
- mean reward-model score and accuracy of the SFT and RL students on held-out prompts;
- RL's validation curve from the shipped checkpoint's lineage (agreement with vote labels on validation
  prompts per step, step 0 being the SFT student, and the selected step), when the pipeline records it.

Prints a table per (teacher, reward setting) and writes ``bench-results/known_answer[_<task>][_<size>].json``
under the current directory.
Seeded. ``rd experiment known-answer-grid`` runs it over seeds and teachers and summarises with intervals.

    rd experiment known-answer [--task larger|smaller|sum] [--size small|grid|full] [--seed 0]
        [--teachers weak,strong] [--rewards paper,combined] [--keep DIR]
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported, here and in the trainers

from rd_pipeline.cli.known_answer.experiment import (  # noqa: E402
    main,
    parse_targets,
    result_text,
    run_experiment,
    run_teacher,
)
from rd_pipeline.cli.known_answer.measurement import heldout_gold_pairs, measure, validation_summary  # noqa: E402
from rd_pipeline.cli.known_answer.report import (  # noqa: E402
    TARGET_RL_KEEPS,
    TARGET_RL_REWARD,
    TARGET_RM,
    TARGET_SFT,
    TARGET_VOTE,
    fmt,
    mark,
    table,
    targets,
)
from rd_pipeline.cli.known_answer.stats import mean_interval, paired_difference, t95  # noqa: E402
from rd_pipeline.cli.known_answer.task import (  # noqa: E402
    REWARD_SETTINGS,
    ROLES,
    SIZES,
    STUDENT_TARGET,
    TASKS,
    TEACHER_TARGETS,
    TEMPERATURES,
    Problem,
    Size,
    Task,
    split_problems,
)

__all__ = [
    "REWARD_SETTINGS",
    "ROLES",
    "SIZES",
    "STUDENT_TARGET",
    "TARGET_RL_KEEPS",
    "TARGET_RL_REWARD",
    "TARGET_RM",
    "TARGET_SFT",
    "TARGET_VOTE",
    "TASKS",
    "TEACHER_TARGETS",
    "TEMPERATURES",
    "Problem",
    "Size",
    "Task",
    "fmt",
    "heldout_gold_pairs",
    "main",
    "mark",
    "mean_interval",
    "measure",
    "paired_difference",
    "parse_targets",
    "result_text",
    "run_experiment",
    "run_teacher",
    "split_problems",
    "t95",
    "table",
    "targets",
    "validation_summary",
]
