# Quick start: `make demo` and `make test` on a fresh machine with Python 3.11.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.edgesmith-installed

.PHONY: install demo demo-embed test bench bench-sst2 bench-embedding clean distclean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: install
	$(BIN)/scons -j2 target=cpu
	$(BIN)/python build/cpu/bundle/run.py \
		"The battery easily lasts two days and the screen is gorgeous." \
		"Support never answered and the app crashes every time I open it." \
		"Not bad at all for the price, I would order it again." \
		"The hotel looked nothing like the photos and the room smelled of smoke."

# The packaged MiniLM as a sentence-embedding model (targets/cpu_embedding.toml): similarity, then a small search.
demo-embed: install
	$(BIN)/scons -j2 target=cpu_embedding
	$(BIN)/python build/cpu_embedding/bundle/run.py --similarity \
		"How do I reset my password?" "I forgot my login details and cannot sign in."
	$(BIN)/python build/cpu_embedding/bundle/run.py --similarity \
		"How do I reset my password?" "The pasta was overcooked and cold."
	$(BIN)/python build/cpu_embedding/bundle/run.py --search "the screen is beautiful" --top 3 \
		"The battery easily lasts two days and the screen is gorgeous." \
		"Support never answered and the app crashes every time I open it." \
		"The display is bright and sharp, a joy to look at." \
		"The hotel looked nothing like the photos and the room smelled of smoke." \
		"Not bad at all for the price, I would order it again."

# Two pytest-xdist workers, a module at a time, in the order tests/conftest.py gives (long builds first).
test: install
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=25

bench: install
	$(BIN)/python bench/noop.py

# Every compression variant on SST-2 (../shared/data/sst2), against Optimum in its own venv.
bench-sst2: install
	$(BIN)/python bench/sst2.py

# Sentence embeddings on SST-2's texts (../shared/data/sst2) against sentence-transformers in its own venv.
bench-embedding: install
	$(BIN)/python bench/embedding_sst2.py

clean:
	-$(BIN)/scons -c -Q target=all
	rm -rf build dist

distclean: clean
	rm -rf $(VENV)
