# Two commands do all set-up: `make run` and `make test` (see README.md).
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.install-stamp
# The C core comes from its one source list: the .c entries, and the headers in the folders
# (entries ending in '/'); then the binding.
# The simulation's fake-quantization extension (quant/csrc) is built by the same setup.py.
C_LIST    := kernels/c/sources.txt
C_ENTRIES := $(shell sed 's/\#.*//' $(C_LIST))
C_SOURCES := $(filter %.c,$(C_ENTRIES)) $(wildcard $(addsuffix *.h,$(filter %/,$(C_ENTRIES)))) \
             $(wildcard quant/csrc/*.c quant/csrc/*.h) \
             $(wildcard kernels/_ext/*.c)

.PHONY: install ext run results demo test test-all fuzz toolchains data bench typecheck clean

# Creates .venv and installs the project editable with the dev extra. Re-runs only
# when the dependency declarations change; otherwise it only rebuilds the C extension
# when a C source is newer than it.
install: $(STAMP) ext

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt --upgrade pip setuptools wheel numpy
	$(PIP) install -q -c constraints.txt --no-build-isolation -e '.[dev]'
	touch $(STAMP)

ext: $(STAMP) kernels/.ext-stamp

kernels/.ext-stamp: $(C_SOURCES) $(C_LIST) kernels/c_sources.py setup.py
	$(PY) setup.py -q build_ext --inplace
	touch $@

# The default experiment: a sweep of the default schemes (experiments.run), then their table
# (experiments.compare): float, fast, exact and C accuracy and the verification mismatches.
RUN_DIR ?= outputs/make_run
run: install
	rm -rf $(RUN_DIR)
	$(PY) -m experiments.run -m +experiment=default_schemes hydra.sweep.dir=$(RUN_DIR)
	$(PY) -m experiments.compare $(RUN_DIR)

# docs/results.md: the four study sweeps on Fashion-MNIST (experiment bundles), then the page.
RESULTS_DIR ?= outputs/results
results: install
	for study in granularity calibration qat_low_bits accumulators; do \
		$(PY) -m experiments.run -m +experiment=$$study progress=false hydra.sweep.dir=$(RESULTS_DIR)/$$study || exit 1; \
	done
	$(PY) -m experiments.results $(RESULTS_DIR) --out docs

demo: install
	$(PY) -m experiments.demo

test: install
	$(PY) -m pytest -q

# The default suite plus the sweeps too long for it (every zoo model x preset exported to C and run).
test-all: install
	LOWBIT_FULL_SWEEP=1 $(PY) -m pytest -q

# The fuzzing harness (tests/fuzz, docs/fuzzing.md): FUZZ_CASES cases over every entry point of the C
# extension, rebuilt with -fsanitize=address,undefined, in two processes (FUZZ_SEED picks the hypothesis
# seed); findings under outputs/fuzz.
FUZZ_CASES ?= 100000
FUZZ_SEED ?= 0
fuzz: install
	$(PY) -m tests.fuzz --cases $(FUZZ_CASES) --seed $(FUZZ_SEED) --sanitize --jobs 2 --out outputs/fuzz

# The other C toolchains the export tests build with (clang, 32-bit gcc): Debian packages, installed
# with apt-get when this runs as root; the tests that need them are skipped, saying so, without them.
toolchains:
	@if command -v clang >/dev/null && echo 'int main(void){return 0;}' | cc -m32 -x c - -o /dev/null 2>/dev/null; then \
		echo "toolchains: clang and gcc -m32 are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang gcc-multilib \
		|| (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends clang gcc-multilib); \
	else \
		echo "toolchains: install clang and gcc-multilib (Debian) to run every export test"; \
	fi

# The Debian packages the offline datasets need (experiments/data/): Fashion-MNIST's IDX files, and
# espeak-ng and sox, which synthesize the spoken digits; installed with apt-get when this runs as root;
# the tests that need them are skipped, saying so, without them.
data:
	@if [ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && command -v espeak-ng >/dev/null && command -v sox >/dev/null; then \
		echo "data: dataset-fashion-mnist, espeak-ng and sox are installed"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dataset-fashion-mnist espeak-ng sox \
		|| (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends dataset-fashion-mnist espeak-ng sox); \
	else \
		echo "data: as root, run: apt-get install --no-install-recommends dataset-fashion-mnist espeak-ng sox"; \
	fi

bench: install
	$(PY) -m benchmarks.bench_sim
	@if [ -f benchmarks/bench_kernels.py ]; then $(PY) -m benchmarks.bench_kernels; fi
	$(PY) -m benchmarks.bench_verify
	$(PY) -m benchmarks.bench_export
	$(PY) -m benchmarks.bench_layers
	$(PY) -m benchmarks.bench_ptq

typecheck: install
	$(PY) -m mypy quant kernels experiments benchmarks tests

clean:
	rm -rf build kernels/.ext-stamp kernels/*.so
