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
            `python -m asd_jax.detect --detector DIR/detector clip.wav` uses without the training data.
Training health: the run prints each fine-tuned model's end loss, training and held-out accuracy, and a `warning`
line naming a model that ended near chance, a pre-training whose EMA teacher hardly moved, and the models that
read only the start of longer clips; results.json keeps the warnings ("warnings") and the report shows them.
With no evaluable section (a handful of real clips) the tables say n/a and the grid search is skipped.

Modules: `specs` (the config's models and systems), `workdir` (the workdir's layout: every path, writer and
reader of its files, the one module that knows them), `cache` (stamps, reuse checks), `stages` (the steps
above), `results` (result types, Tables 1 and 3, results.json), `__main__` (the program).

Re-running with the same config and workdir retrains and re-embeds nothing; a workdir trained with another
model config (`finetuning.fine_tune.RUN_FIELDS`) or on clips that changed is refused (use a new workdir).
The package imports no JAX until `run` is used (the report reads a workdir through `workdir` without it).
"""

import importlib
from typing import Any


def __getattr__(name: str) -> Any:
  """`run` (`stages.run`), `PipelineResult` and the submodules, imported on first use."""
  if name == "run":
    return importlib.import_module(f"{__name__}.stages").run
  if name == "PipelineResult":
    return importlib.import_module(f"{__name__}.results").PipelineResult
  if name in ("cache", "results", "specs", "stages", "workdir"):
    return importlib.import_module(f"{__name__}.{name}")
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
