# run.c: build, test, and run.
#   make            portable build (-O3), no OpenMP
#   make fast       this machine's instruction set (-march=native) and OpenMP threads
#   make test       portable build, then the test suite (make test BUILD=fast: the same on the fast build)
#   make run        build and tell a story with the default model (models/)
#   make tokenizer  re-export tokenizer.bin from ../shared's Llama 2 tokenizer.model

CC ?= cc
PYTHON ?= python3
CFLAGS ?= -O3
FASTFLAGS = -O3 -march=native -fopenmp
WARN = -std=c11 -Wall -Wextra
SHARED ?= ../shared
BUILD ?= build

ifeq ($(BUILD),fast)
FLAGS = $(FASTFLAGS)
else
FLAGS = $(CFLAGS)
endif

# Binaries are rebuilt on every call (one file, about a second), so that
# `make` and `make fast` never leave a stale build of the other kind behind.
.PHONY: all build fast harness test run tokenizer clean bench
all: build

build:
	$(CC) $(CFLAGS) $(WARN) -o run run.c -lm

fast:
	$(CC) $(FASTFLAGS) $(WARN) -o run run.c -lm

# run.c's functions driven by the tests (logits, encoding), built like ./run
harness:
	$(CC) $(FLAGS) $(WARN) -Wno-unused-function -o tests/harness tests/harness.c -lm

test: $(BUILD) harness
	$(PYTHON) -m pytest -q tests

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
