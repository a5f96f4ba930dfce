from configs import demo_pipeline
def get_config():
  c = demo_pipeline.get_config()
  c.pretrain = None
  c.model_keys = "frozen_eat,frozen_eat_random,log_mel"
  c.export = False
  return c
