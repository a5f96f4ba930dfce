"""Batch-size autotuning: the search logic on scripted throughputs, and a real measurement runs."""

import jax
import jax.numpy as jnp
import pytest

from asd_jax.runtime import autotune
from asd_jax.runtime import sharding as shd


def _scripted(rates):
  calls = []

  def measure(size):
    calls.append(size)
    rate = rates[size]
    if isinstance(rate, Exception):
      raise rate
    return rate

  return measure, calls


def test_stops_when_the_gain_flattens():
  measure, calls = _scripted({1: 10.0, 2: 18.0, 4: 30.0, 8: 31.0, 16: 50.0})
  best, tried = autotune.pick_batch_size(measure, [8, 1, 4, 2, 16], min_gain=0.05)
  assert calls == [1, 2, 4, 8]  # 8 gains 3 % < 5 %: 16 is never tried
  assert best == 8 and tried[-1] == (8, 31.0)


def test_keeps_the_best_when_a_larger_batch_is_slower():
  measure, _ = _scripted({1: 10.0, 2: 18.0, 4: 12.0})
  assert autotune.pick_batch_size(measure, [1, 2, 4])[0] == 2


def test_out_of_memory_ends_the_search_other_errors_propagate():
  oom = RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 123 bytes")
  measure, calls = _scripted({2: 5.0, 4: 9.0, 8: oom, 16: 100.0})
  best, tried = autotune.pick_batch_size(measure, [2, 4, 8, 16])
  assert best == 4 and tried == [(2, 5.0), (4, 9.0), (8, None)] and calls == [2, 4, 8]
  with pytest.raises(RuntimeError, match="not even batch size 8"):
    autotune.pick_batch_size(_scripted({8: oom})[0], [8])
  with pytest.raises(ValueError, match="shape"):
    autotune.pick_batch_size(_scripted({1: ValueError("bad shape")})[0], [1])


def test_candidates_are_multiples_of_the_device_count():
  assert autotune.candidate_batch_sizes(1, 16) == [1, 2, 4, 8, 16]
  assert autotune.candidate_batch_sizes(8, 64) == [8, 16, 32, 64]
  assert autotune.candidate_batch_sizes(3, 2) == [3]


def test_measures_a_real_compiled_forward():
  mesh = shd.data_mesh()
  forward = jax.jit(lambda p, wav: {"embedding": jnp.tanh(wav @ p)},
                    in_shardings=(shd.replicated(mesh), shd.batch_sharded(mesh)))
  params = shd.replicate(jnp.ones((64, 4)), mesh)
  best, tried = autotune.pick_batch_size(autotune.forward_throughput(forward, params, 64, mesh, repeats=1),
                                         autotune.candidate_batch_sizes(mesh.devices.size, 8))
  assert best in (2, 4, 8) and all(rate > 0 for _, rate in tried)


def test_speed_never_reads_zero():
  """Issue 23.8: EAT-large's bar showed `clips/s=0.0` (2 clips in a 50 s step); a stage with nothing to do said
  `0.0 clips/s` too."""
  assert autotune.speed(2, 50.0) == "25.0 s/clip"
  assert autotune.speed(1, 0.35) == "2.9 clips/s"
  assert autotune.speed(64, 2.0) == "32 clips/s"
  assert autotune.speed(0, 3.0) == "no clips"
  assert autotune.speed(0, 0.0, unit="step") == "no steps"
