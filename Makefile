# nano8k — the two set-up commands are `make demo` and `make test`; both create or reuse .venv.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.nano8k-installed

.PHONY: install demo test test-fast test-all check-configs bench gpu-check clean

# torch goes in first and alone: the pin takes the CPU wheel on a CPU machine and the CUDA build on
# a GPU machine; installing it with the package could let a resolver pick another build.
# torchaudio is never installed (no CPU build matches torch 2.13; its presence breaks `import funasr`).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev]" "torch==2.13.0"
	@if $(PY) -m pip show torchaudio >/dev/null 2>&1; then \
	  echo "torchaudio is installed in $(VENV): it breaks 'import funasr' on this torch; removing it"; \
	  $(PY) -m pip uninstall --yes --quiet torchaudio; fi
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(PY) scripts/demo.py

# two worker processes (pytest-xdist), each test file on one of them: most tests wait on a
# subprocess that spends its first seconds importing, so two overlap well on two cores
TEST_WORKERS ?= 2
test: install
	$(PY) -m pytest -m "not slow" -q -n $(TEST_WORKERS) --dist loadfile --durations=25

# configs, validation, CLI, alignment, channel DSP: no FunASR model is built (under 2 minutes)
test-fast: install
	$(PY) -m pytest -m "not slow and not funasr" -q

test-all: install
	$(PY) -m pytest -q

check-configs: install
	$(PY) ../shared/tools/check_config_fidelity.py ../shared/spec/config-alignment.md $(VENV)/bin/nano8k

bench: install
	$(PY) scripts/bench_cli.py

# GPU readiness in one command (about 8 minutes on one GPU; GPU_CHECK_DEVICE=cpu: small sizes on CPU)
GPU_CHECK_DEVICE ?= cuda
gpu-check: install
	$(PY) scripts/gpu_check.py --device $(GPU_CHECK_DEVICE)

clean:
	rm -rf outputs multirun .pytest_cache build dist src/*.egg-info
