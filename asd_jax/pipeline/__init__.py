r"""From audio to the report's tables in one command: fine-tune, embed, score, fuse, evaluate, write submissions,
export a detector.

  python -m asd_jax.pipeline --config=configs/system1.py --workdir=DIR [--config.data.root=ROOT]

For the dataset under `config.data.root` (a DCASE 2025 Task 2 layout; the synthetic one for the demo), `run`
(`stages.run`):
  1. train  every fine-tuned model that is not done yet (`finetuning.fine_tune`, resumable; DIR/models/<key>/);
  2. embed  every clip with each fine-tuned and frozen model (`embedding`), skipped when its embeddings are up
            to date with the model's latest checkpoint, the clips' contents and its layer setting (`cache`);
  3. score  each model (SMOTE + cosine 1-NN over the normal training clips of each section, leave-one-out
            normalisation; `scoring.scorer`); the "Fusion" model joins LBEATs' and LEAT's final embeddings;
            `layers="all"` models score the concatenated pooled outputs of all layers;
  4. fuse   the normalised scores with each system's fixed weights (thresholds fitted on the fused training
            scores; `scoring.fusion`, the same path the detector scores with), plus a system whose weights are
            grid-searched on the labelled test clips (an oracle on the development set, reported apart);
  5. report the official metrics: Table 1 (per model, reference rows last) and Table 3 (per system);
  6. write  DCASE submission folders DIR/submissions/<system>/;
  7. export the detector of `config.system` to DIR/detector/ (`asd_jax.detector`), which
            `python -m asd_jax.detect --system DIR/detector clip.wav` uses without the training data.

Modules: `specs` (the config's models and systems), `cache` (stamps, reuse checks), `stages` (the steps above),
`results` (result types, Tables 1 and 3, results.json), `__main__` (the program).

What the workdir holds (every file a later run or reader uses is written atomically):

  DIR/clip_hashes.json                  content hash of every clip, keyed by path, with its stat signature
  DIR/models/<key>/                     per fine-tuned or frozen model:
      checkpoints/, config.json, label_space.json, metrics.jsonl   training (fine-tuned; `finetuning.fine_tune`)
      embeddings.npz, embeddings_records.json                      every clip's embeddings (`embedding.store`)
      pipeline_stamp.json                                          what the above were made from (`cache`)
  DIR/scores/<key>_scorer.npz           the model's fitted scorer (`scoring.scorer.Scorer.load`)
  DIR/scores/<key>_test.npz             test clips, in one order: raw [n] kNN cosine distance, normalized [n],
                                        decisions [n] (model's own thresholds), nearest_train_clip [n] (index
                                        into the scorer's train_paths; SMOTE entries map to their parent clip),
                                        paths [n]
  DIR/scores/<system>_fused.npz         per system (and "grid"): scores [n] fused, decisions [n],
                                        nearest_train_clip [n] (fused nearest), paths [n], thresholds [sections]
                                        with threshold_machines [sections], threshold_sections [sections]
  DIR/submissions/<system>/             anomaly_score_<machine>_section_<ss>_test.csv, decision_result_*.csv
  DIR/tables.md                         Tables 1 and 3 as printed
  DIR/results.json                      {"dataset", "labelled", "actions": {key: {"train", "embed"}},
                                         "models": {key: {"name", "kind", "reference", "layers", "sources",
                                                          "evaluation"}},
                                         "systems": {name: {"weights", "reduced", "note", "submission",
                                                            "evaluation"}}, "detector"}
                                        ("evaluation": `Evaluation.to_json_dict()`, null on unlabelled data)
  DIR/detector/                         the exported detector (`asd_jax.detector`)

Re-running with the same config and workdir retrains and re-embeds nothing; a workdir trained with another
model config (`finetuning.fine_tune.RUN_FIELDS`) or on clips that changed is refused (use a new workdir).
"""

from asd_jax.pipeline.results import PipelineResult  # noqa: F401  (the result of `run`)
from asd_jax.pipeline.stages import run  # noqa: F401
