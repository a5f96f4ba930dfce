"""The report's full pipeline: six models (FBEATs, LBEATs, FEAT, LEAT, Dual-Branch, Fusion), four systems.

`configs/system{1,2,3,4}.py` are this config with `system` set: the pipeline evaluates all four fixed-weight
systems (and a grid-searched one, reported apart) in every run; `system` only picks the one exported as the
detector. The models are the fine-tuning configs of `configs/{fbeats,lbeats,feat,leat,dual_branch}.py`
unchanged, plus "Fusion", the concatenation of LBEATs' and LEAT's final embeddings. Set the dataset and the
converted pretrained encoders on the command line:

  python -m asd_jax.pipeline --config=configs/system2.py --workdir=work/system \
      --config.data.root=/data/dcase2025t2/dev_data/raw \
      --config.init.beats=/abs/beats_iter3_plus --config.init.eat=/abs/eat_base

Per model, `--config.models.<key>.layers=all` scores the concatenation of all layers' pooled outputs
(multi-layer fusion) instead of the final embedding; `--config.model_keys=fbeats,lbeats` runs a subset
(systems that need the others are reduced and say so).
"""

import ml_collections

from asd_jax.scoring import scorer as scorer_lib
from configs import dual_branch, fbeats, feat, lbeats, leat, systems

MODEL_KEYS = ("fbeats", "lbeats", "feat", "leat", "dual_branch", "fusion")
# Table/system names (configs/systems.py MODELS) of the keys above.
NAMES = dict(zip(MODEL_KEYS, systems.MODELS))
TRAIN_CONFIGS = {"fbeats": fbeats, "lbeats": lbeats, "feat": feat, "leat": leat, "dual_branch": dual_branch}


def model_entry(key: str, train_config=None, *, sources: str = "", layers: str = "last") -> ml_collections.ConfigDict:
  """One `config.models.<key>` entry: a fine-tuned model (`train_config`) or a concatenation (`sources`)."""
  entry = ml_collections.ConfigDict(dict(name=NAMES.get(key, key), layers=layers, sources=sources))
  entry.train = train_config  # None for a concatenation model
  return entry


def get_config(system: str = "system1") -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.system = system  # the fixed-weight system exported as the detector
  c.data = ml_collections.ConfigDict(dict(root=""))
  c.init = ml_collections.ConfigDict(dict(beats="", eat=""))  # converted pretrained encoders, by encoder name
  c.model_keys = ",".join(MODEL_KEYS)
  c.models = ml_collections.ConfigDict()
  for key, module in TRAIN_CONFIGS.items():
    c.models[key] = model_entry(key, module.get_config())
  c.models.fusion = model_entry("fusion", sources="lbeats,leat")
  c.scorer = scorer_lib.default_config()  # SMOTE (k=2) + cosine 1-NN, leave-one-out normalisation, gamma threshold
  c.system_models = list(systems.MODELS)
  c.systems = ml_collections.ConfigDict({name: list(w) for name, w in systems.WEIGHTS.items()})
  c.threshold_method = "gamma"  # fused systems' thresholds, fitted on their fused training scores
  c.threshold_quantile = 0.9
  c.grid_step = 0.1  # simplex grid of the searched system (3003 weight vectors for six models)
  c.export = True  # write the detector folder for `system`
  return c
