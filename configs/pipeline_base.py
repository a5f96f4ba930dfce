"""The report's full pipeline: six models (FBEATs, LBEATs, FEAT, LEAT, Dual-Branch, Fusion), four systems, and
reference rows (frozen BEATs, frozen EAT, log-mel statistics) that show what fine-tuning adds.

`configs/system{1,2,3,4}.py` are this config with `system` set: the pipeline evaluates all four fixed-weight
systems (and a grid-searched one, reported apart) in every run; `system` only picks the one exported as the
detector. The models are the fine-tuning configs of `configs/{fbeats,lbeats,feat,leat,dual_branch}.py`
unchanged, plus "Fusion", the concatenation of LBEATs' and LEAT's final embeddings. Set the dataset and the
converted pretrained encoders on the command line:

  python -m asd_jax.pipeline --config=configs/system2.py --workdir=work/system \\
      --config.data.root=/data/dcase2025t2/dev_data/raw \\
      --config.init.beats=/abs/beats_iter3_plus --config.init.eat=/abs/eat_large

What each model's scorer sees (report section 2.4): FBEATs, LBEATs, FEAT and LEAT the concatenation of every
transformer layer's pooled output (`layers="all"`, multi-layer fusion); Dual-Branch its fused branch features
(`layers="last"`: the concatenated final BEATs and EAT embeddings the featex head was trained on); Fusion the
final features of LBEATs and LEAT. `--config.models.<key>.layers=last` scores the final layer instead;
`--config.model_keys=fbeats,lbeats` runs a subset (systems that need the others are reduced and say so).

Reference rows (Table 1 only; no system fuses them unless `system_models` and `systems` name them):
  frozen_beats  "BEATs (frozen)"   the pretrained encoder as converted (`init.beats`), no training, all layers
  frozen_eat    "EAT (frozen)"     the same for EAT (`init.eat`)
  log_mel       "log-mel mean/std (not learned)"  each clip's log-mel fbank mean and std over time
Each is scored by the same SMOTE + cosine 1-NN path as the fine-tuned models. Two more rows are defined but
not in the default `model_keys` (the demo runs them; they cost a fine-tuning and an embedding):
  feat_random        "FEAT (random init)"          FEAT fine-tuned from a random-init EAT (`init=False`)
  frozen_eat_random  "EAT (frozen, random init)"   the random-init EAT, no training

`config.pretrain` (None by default): a pre-training config (configs/pretrain_*.py) run first, in
DIR/pretrain/, whose exported encoder then initialises every EAT model (`python -m asd_jax.pretrain` does the
same alone). A corpus source with path "<data.root>" reads the pipeline's dataset (train and supplemental
clips; test clips are left out), with the models' channel policy unless the source names its own `channels`.

`config.data.channels` (empty: the models' own, "near" in every model config) sets the channel policy of every
model at once (`--config.data.channels=cancel` on DCASE 2026 near/far data; asd_jax.audio.channels).
"""

import ml_collections

from asd_jax.models import networks
from asd_jax.scoring import scorer as scorer_lib
from configs import common, dual_branch, fbeats, feat, lbeats, leat, systems

MODEL_KEYS = ("fbeats", "lbeats", "feat", "leat", "dual_branch", "fusion")
# Table/system names (configs/systems.py MODELS) of the keys above.
NAMES = dict(zip(MODEL_KEYS, systems.MODELS))
TRAIN_CONFIGS = {"fbeats": fbeats, "lbeats": lbeats, "feat": feat, "leat": leat, "dual_branch": dual_branch}
# Report section 2.4: multi-layer fusion for the four single-encoder models; Dual-Branch's fused features.
LAYERS = {"fbeats": "all", "lbeats": "all", "feat": "all", "leat": "all", "dual_branch": "last"}
REFERENCE_KEYS = ("frozen_beats", "frozen_eat", "log_mel")
# More reference rows a config can add to model_keys (the demo does): what pre-training adds.
RANDOM_INIT_KEYS = ("feat_random", "frozen_eat_random")
NAMES.update({"frozen_beats": "BEATs (frozen)", "frozen_eat": "EAT (frozen)",
              "log_mel": "log-mel mean/std (not learned)", "feat_random": "FEAT (random init)",
              "frozen_eat_random": "EAT (frozen, random init)"})


def model_entry(key: str, *, fine_tune=None, frozen=None, sources: str = "", layers: str = "last", init: bool = True
                ) -> ml_collections.ConfigDict:
  """One `config.models.<key>` entry: fine-tuned (`fine_tune`), embedded without training (`frozen`) or a
  concatenation of other models (`sources`); `init=False` keeps its own encoder checkpoint field (empty:
  random init) instead of taking the pipeline's `init` paths."""
  entry = ml_collections.ConfigDict(dict(name=NAMES.get(key, key), layers=layers, sources=sources, init=init))
  entry.fine_tune = fine_tune  # None unless fine-tuned
  entry.frozen = frozen  # None unless frozen
  return entry


def log_mel_config() -> ml_collections.ConfigDict:
  """The non-learned log-mel statistics: a network config without parameters (only data and embed are read)."""
  c = common.get_config()
  c.model.network = networks.LOG_MEL_STATS
  return c


def get_config(system: str = "system1") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.system = system  # the fixed-weight system exported as the detector
  c.data = ml_collections.ConfigDict(dict(root=""))
  # The channel policy of every model (asd_jax.audio.channels: near, far, mean, cancel), written into each model's
  # config; "" keeps the models' own data.channels (configs/common.py: "near"), which must agree
  # (asd_jax.pipeline.specs). The "<data.root>" source of a pre-training corpus reads with it too.
  c.data.channels = ""
  c.init = ml_collections.ConfigDict(dict(beats="", eat=""))  # converted pretrained encoders, by encoder name
  c.model_keys = ",".join(MODEL_KEYS + REFERENCE_KEYS)
  c.models = ml_collections.ConfigDict()
  for key, module in TRAIN_CONFIGS.items():
    c.models[key] = model_entry(key, fine_tune=module.get_config(), layers=LAYERS[key])
  c.models.fusion = model_entry("fusion", sources="lbeats,leat")  # report: LBEATs' and LEAT's final features
  c.models.frozen_beats = model_entry("frozen_beats", frozen=fbeats.get_config(), layers="all")
  c.models.frozen_eat = model_entry("frozen_eat", frozen=feat.get_config(), layers="all")
  c.models.log_mel = model_entry("log_mel", frozen=log_mel_config(), layers="all")
  c.models.feat_random = model_entry("feat_random", fine_tune=feat.get_config(), layers="all", init=False)
  c.models.frozen_eat_random = model_entry("frozen_eat_random", frozen=feat.get_config(), layers="all", init=False)
  # EAT pre-training before fine-tuning (a configs/pretrain_*.py config), or None: the report's EAT-large is
  # given as init.eat. When set, DIR/pretrain/encoder becomes init.eat (continuing init.eat if that was set).
  c.pretrain = None
  c.scorer = scorer_lib.default_config()  # SMOTE (k=2) + cosine 1-NN, leave-one-out normalisation, gamma threshold
  c.system_models = list(systems.MODELS)  # the models the systems fuse; every other model is a reference row
  c.systems = ml_collections.ConfigDict({name: list(w) for name, w in systems.WEIGHTS.items()})
  c.threshold_method = "gamma"  # project: fused systems' thresholds, fitted on their fused training scores
  c.threshold_quantile = 0.9
  c.grid_step = 0.1  # simplex grid of the searched system (3003 weight vectors for six models)
  c.export = True  # write the detector folder for `system`
  return c
