# run.c: build, test, and run.
#   make            portable build (-O3), no OpenMP
#   make fast       this machine's instruction set (-march=native) and OpenMP threads
#   make test       portable build, then the test suite (make test BUILD=fast: the same on the fast build)
#   make run        build and tell a story with the default model (models/)
#   make tokenizer  re-export tokenizer.bin from ../shared's Llama 2 tokenizer.model
#   make test BUILD=sanitize  the suite on an AddressSanitizer + UBSan build (scalar kernels)
#   make test BUILD=sanitize-simd  the same with this machine's SIMD kernels
#   make fuzz       each libFuzzer target for FUZZ_SECONDS (clang)
#   make bench      speed on random models (tools/bench.py)

CC ?= cc
PYTHON ?= python3
CFLAGS ?= -O3
FASTFLAGS = -O3 -march=native -fopenmp
WARN = -std=c11 -Wall -Wextra
SHARED ?= ../shared
BUILD ?= build

SANFLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all

ifeq ($(BUILD),fast)
FLAGS = $(FASTFLAGS)
else ifeq ($(BUILD),sanitize)
FLAGS = $(SANFLAGS)
else ifeq ($(BUILD),sanitize-simd)
FLAGS = $(SANFLAGS) -march=native
else
FLAGS = $(CFLAGS)
endif

# Binaries are rebuilt on every call (one file, about a second), so that
# `make` and `make fast` never leave a stale build of the other kind behind.
.PHONY: all build fast sanitize sanitize-simd harness test run tokenizer clean bench fuzz
all: build

build:
	$(CC) $(CFLAGS) $(WARN) -o run run.c -lm

fast:
	$(CC) $(FASTFLAGS) $(WARN) -o run run.c -lm

sanitize:
	$(CC) $(SANFLAGS) $(WARN) -o run run.c -lm

sanitize-simd:
	$(CC) $(SANFLAGS) -march=native $(WARN) -o run run.c -lm

# run.c's functions driven by the tests (logits, encoding), built like ./run
harness:
	$(CC) $(FLAGS) $(WARN) -Wno-unused-function -o tests/harness tests/harness.c -lm

# With pytest-xdist (Debian's python3-pytest-xdist) the tests run on every core.
PYTEST_JOBS ?= $(shell $(PYTHON) -c "import xdist" 2>/dev/null && echo "-n auto")
test: $(BUILD) harness
	$(PYTHON) -m pytest -q $(PYTEST_JOBS) tests

# The default model, trained by tools/train.py, tells a story; run.c finds
# models/tokenizer.bin beside it.
run: build
	./run models/tinystories.bin

tokenizer:
	$(PYTHON) export.py tokenizer.bin --tokenizer $(SHARED)/tokenizers/llama2/tokenizer.model

clean:
	rm -f run tests/harness

# Speed on random models of fixed shapes (see tools/bench.py); not part of the tests.
bench: fast
	$(PYTHON) tools/bench.py

# libFuzzer targets (tests/fuzz), with AddressSanitizer and UBSan, each run for
# FUZZ_SECONDS from the seed corpus in tests/fuzz/corpus (new inputs go to
# $(FUZZ_DIR), not into the repository).
FUZZ_SECONDS ?= 60
FUZZ_DIR ?= /tmp/runc-fuzz
FUZZ_TARGETS = model tokenizer encode chat
fuzz:
	mkdir -p $(FUZZ_DIR)
	$(PYTHON) tests/fuzz/chat_tokenizer.py $(SHARED) $(FUZZ_DIR)/chat
	$(PYTHON) export.py $(FUZZ_DIR)/smollm2.bin --tokenizer $(FUZZ_DIR)/chat/tokenizer.json
	$(PYTHON) export.py $(FUZZ_DIR)/llama3.bin --tokenizer $(SHARED)/tokenizers/llama3/tokenizer.model
	for t in $(FUZZ_TARGETS); do \
		clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
			-o $(FUZZ_DIR)/fuzz_$$t tests/fuzz/fuzz_$$t.c -lm || exit 1; \
	done
	for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_DIR)/corpus_$$t; \
		FUZZ_SPM_TOKENIZER=tokenizer.bin FUZZ_BPE_TOKENIZER=$(FUZZ_DIR)/smollm2.bin \
		FUZZ_LLAMA3_TOKENIZER=$(FUZZ_DIR)/llama3.bin ASAN_OPTIONS=detect_leaks=0 \
		$(FUZZ_DIR)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=65536 -rss_limit_mb=4096 \
			-print_final_stats=1 $(FUZZ_DIR)/corpus_$$t tests/fuzz/corpus/$$t || exit 1; \
	done
