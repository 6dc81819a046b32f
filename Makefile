# The two front doors: `make demo` and `make test`. Both create .venv when missing.
VENV ?= .venv
PY := $(VENV)/bin/python
# Everything runs offline: models and data are local or generated.
export HF_HUB_OFFLINE=1
export TRANSFORMERS_OFFLINE=1
export HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
# xtuner re-launches `python`/`torchrun` from PATH: make it the venv's.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: demo demo-distill demo-genixer test install clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	-$(PY) -m pip uninstall -q -y mg_llava 2>/dev/null  # the distribution was renamed xtuner-mg-llava (see setup.py)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	touch $@

# Test-only tools (TensorBoard: its logging switch is tested; xdist: two workers, a test file per worker, since most
# of the suite's time is single-threaded process start-up and imports), kept out of the demo's install.
$(VENV)/.test-installed: $(VENV)/.installed
	$(PY) -m pip install -q --disable-pip-version-check pytest pytest-timeout pytest-xdist tensorboard
	touch $@

demo: install
	bash script/demo.sh

# LLaVA-MoD on the demo: its model (made by `make demo` when absent) distilled into a smaller MoE student.
demo-distill: install
	bash script/demo_distill.sh

# Genixer on the demo: a low-label learner's generator writes QA about fresh images, a judge filters, mix, compare.
demo-genixer: install
	bash script/demo_genixer.sh

test: $(VENV)/.test-installed
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile tests

clean:
	rm -rf .demo work_dirs
