# Entry points for a fresh clone. `make demo` installs into .venv and runs the main job;
# `make test` runs the default (fast) test suite. See BUILD.md for accelerators.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
WORK ?= work

.PHONY: install demo demo-2026 test test-slow bench side-by-side device-check device-wheels clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU torch first (only used to read .pt checkpoints); an unpinned torch pulls a CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,convert,report]'
	touch $@

install: $(VENV)/.installed

# The main job: synthetic DCASE 2025 dev set (2 s clips, 10 target-domain training clips per machine
# as in the real dev set) and synthetic "earlier years" (other machine types, 2020/2023 layouts); the tiny EAT
# pre-trained on their unlabelled clips, then the six models of the report at tiny size (EAT ones from the
# pre-trained encoder), reference rows, scoring, fusion, tables, stage times; then the report (figures and
# one HTML page, $(WORK)/demo/report/index.html).
demo: install
	test -d $(WORK)/synth_dcase || $(PY) -m asd_jax.data.synth --out $(WORK)/synth_dcase --duration 2 --target_train 10 --test_clips 20
	test -d $(WORK)/synth_past || $(PY) -m asd_jax.data.synth_past --out $(WORK)/synth_past
	$(PY) -m asd_jax.pipeline --config=configs/demo_pipeline.py --workdir=$(WORK)/demo --config.data.root=$(WORK)/synth_dcase \
	    --config.pretrain.data.sources.synth_past.path=$(WORK)/synth_past
	$(PY) -m asd_jax.report --workdir=$(WORK)/demo

# The demo on synthetic DCASE 2026 data: two-channel near/far clips of the 2026 dev machine types, every model
# reading them with the channel policy CHANNELS (near, far, mean or cancel; configs/demo_2026.py), one workdir per
# policy; then the report.
CHANNELS ?= near
demo-2026: install
	test -d $(WORK)/synth_2026 || $(PY) -m asd_jax.data.synth --year 2026 --out $(WORK)/synth_2026 --duration 2 --target_train 10 --test_clips 20
	$(PY) -m asd_jax.pipeline --config=configs/demo_2026.py --workdir=$(WORK)/demo_2026_$(CHANNELS) \
	    --config.data.root=$(WORK)/synth_2026 --config.data.channels=$(CHANNELS)
	$(PY) -m asd_jax.report --workdir=$(WORK)/demo_2026_$(CHANNELS)

test: install
	# loadscope: each test module on one worker, so its module-scoped fixtures (a pipeline run, a pre-training
	# run) are computed once, not once per worker.
	$(PY) -m pytest -q -n 2 --dist loadscope

test-slow: install
	$(PY) -m pytest -q -m slow

bench: install
	$(PY) -m benchmarks.run

# Upstream PyTorch BEATs / EAT vs this Flax code in one process; needs your own clones (either or both):
#   make side-by-side UPSTREAM_BEATS=/path/to/unilm/beats UPSTREAM_EAT=/path/to/EAT
side-by-side: install
	@test -n "$(UPSTREAM_BEATS)$(UPSTREAM_EAT)" || { echo "usage: make side-by-side UPSTREAM_BEATS=/path/to/unilm/beats UPSTREAM_EAT=/path/to/EAT (either or both)" >&2; exit 2; }
	$(PY) -m benchmarks.side_by_side $(if $(UPSTREAM_BEATS),--upstream_beats=$(UPSTREAM_BEATS)) $(if $(UPSTREAM_EAT),--upstream_eat=$(UPSTREAM_EAT))

# On one NVIDIA H100/H200 with JAX preinstalled (no venv, no network): see benchmarks/device_check.sh.
device-check:
	benchmarks/device_check.sh

# Where pip works: the wheels device-check needs on an H200 image without them (Python 3.12; pure-Python
# ml-collections; absl-py, PyYAML and tqdm are on that image). Carry the .whl folder to the machine.
device-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	  --platform manylinux2014_x86_64 -d .whl ml-collections

clean:
	rm -rf $(WORK) build dist *.egg-info
