"""The report's pre-training corpus: the DCASE 2020-2024 Task 2 development and additional training sets, and AudioSet.

The report pre-trains EAT-large on the DCASE 2020-2024 Task 2 development and additional training data
together with AudioSet. Point each field at your copy (BUILD.md, "Pre-training corpora", says where each
set comes from and the layout expected); a source whose path stays "" is not used:

  python -m asd_jax.data.pack --config=configs/pretrain_corpus.py --out=/data/packed/pretrain --num_workers=8 \
      --config.sources.dcase2020.path=/data/dcase2020t2 --config.sources.dcase2021.path=/data/dcase2021t2 \
      --config.sources.dcase2022.path=/data/dcase2022t2 --config.sources.dcase2023.path=/data/dcase2023t2 \
      --config.sources.dcase2024.path=/data/dcase2024t2 \
      --config.sources.audioset_balanced.path=/data/audioset/balanced_train_segments \
      --config.sources.audioset_unbalanced.path=/data/audioset/unbalanced_train_segments

`dcaseYYYY` is one folder per year holding that year's dev set and its additional training (+ evaluation)
set, unpacked in any way below it (every machine folder with train/ or test/ is found). Test clips of
every year are left out (`include_test=False`: they share machine types with the 2025 dev set, and the
evaluation sets' test clips are evaluation data), their training clips are in. Weights are all 1
(project choice; the report gives none): every clip is drawn equally often, the union of the sets.
Clips: 16 kHz mono, 10 s random crops, shorter ones zero-padded as EAT pads (`asd_jax.data.corpus`). Channels:
`channels` = "mean" (the corpus default: the mix-down upstream EAT's fairseq loader applies to AudioSet; these
DCASE years are mono); a DCASE 2026 source added here would say `corpus.source(path, "dcase", channels="near")`.
"""

from asd_jax.data import corpus

YEARS = (2020, 2021, 2022, 2023, 2024)


def get_config():
  c = corpus.default_config()
  for year in YEARS:
    c.sources[f"dcase{year}"] = corpus.source("", "dcase")
  # AudioSet (AS-2M = balanced + unbalanced training segments), as wav/flac files in any folder tree.
  c.sources.audioset_balanced = corpus.source("", "folder")
  c.sources.audioset_unbalanced = corpus.source("", "folder")
  c.clip_seconds = 10.0
  c.lock()
  return c
