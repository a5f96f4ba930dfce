"""System 4 of the report: the six models (see configs/pipeline_base.py); system4's weights are exported."""

from configs import pipeline_base


def get_config():
  return pipeline_base.get_config("system4")
