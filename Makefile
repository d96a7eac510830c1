# The two set-up commands (see README): `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install everything on a fresh machine first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test test-slow lint install mini mini-eval chromium app

$(BIN)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	# The CPU build of torch comes from local disk; an unpinned torch would pull a multi-GB CUDA build.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[torch,test,data,train,app]'
	touch $@

install: $(BIN)/.installed

demo: $(BIN)/.installed
	$(BIN)/clipaway-jax demo $(ARGS)

app: $(BIN)/.installed
	$(BIN)/clipaway-jax app $(ARGS)

# Two workers, a test file each at a time (module fixtures stay shared; the heaviest files first, see
# tests/conftest.py). On a fresh clone on this 2-core machine, 2026-12-01: 13.2 min whole (670 s of pytest, the
# rest is the install; 287 passed, 1 xfailed) with the machine at full speed; an earlier run of nearly the same
# suite took 19.0 min (943 s) with the machine in its slow phase (the bf16 test 69 s against 42 s). The wheel
# test (a fresh venv with the wheel alone) adds about 45 s, the config test about a minute. A later fresh clone
# the same day, the machine in its slow phase (bf16 test 72 s): 1069 s of pytest (298 tests), of which 132 s were
# the 8-latent-channel end-to-end test, since marked slow (about 17.5 min whole without it). --durations lists
# the slowest.
test: $(BIN)/.installed chromium
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --durations=12

# The app's browser test drives Debian's chromium (Playwright's client; no browser download).
chromium:
	@command -v chromium >/dev/null 2>&1 || apt-get install -y -q chromium >/dev/null \
		|| (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) \
		|| sudo apt-get install -y -q chromium

test-slow: $(BIN)/.installed
	$(BIN)/python -m pytest -q -m slow

lint: $(BIN)/.installed
	$(BIN)/ruff check .

# The mini model set from nothing (data, nine trainings, the float16 export into clipaway_jax/assets/mini):
# on this 2-core CPU about 113 minutes: 109.2 timed as one run from nothing on a fresh clone (2026-12-07)
# before the VAE decoder stage, which took 4.0 more when timed alone; about 120 at the slowest rates
# measured. Rerunning continues where it stopped. Then its evaluation table.
mini: $(BIN)/.installed
	$(BIN)/python -m clipaway_jax.mini.recipe --out runs/mini --ship clipaway_jax/assets/mini

mini-eval: $(BIN)/.installed
	$(BIN)/python -m clipaway_jax.mini.evaluate --data-dir runs/mini/data --out runs/mini/eval $(ARGS)
