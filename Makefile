# `make help` lists the targets.
PYTHON ?= python
MODEL ?=
LIMIT ?=
EXTRA ?=
# Where reports go: empty = reports/<experiment>/ (untracked). The committed results/ change only
# when asked: OUT=results (results/README.md names the command behind each committed file).
OUT ?=
# MODEL=tiny runs every cell of an experiment on CPU: a tiny random model ($(2) when given,
# e.g. tiny_mdlm for Table 4) and the task slices in tests/fixtures (configs/profile/$(3) or tiny).
# LIMIT=2 is the CPU smoke size everywhere (two examples per cell: the least that has an interval).
# It runs torch on one thread: a tiny model's forward is too small to split, and two threads on a
# loaded 2-core machine spin-wait for each other (20 forwards: 0.23 s CPU on one thread, 4.8-6.5 s
# on two, with load ~6; README "LIMIT and time").
TINY = model=$(or $(2),tiny) +profile=$(or $(3),tiny)
TINY_ENV = $(if $(filter tiny,$(MODEL)),OMP_NUM_THREADS=1)
sweep = $(TINY_ENV) $(PYTHON) -m boe_bench -m experiment=$(1) \
	$(if $(filter tiny,$(MODEL)),$(TINY),$(if $(MODEL),model=$(MODEL))) $(if $(LIMIT),limit=$(LIMIT)) $(EXTRA)
report = $(PYTHON) -m boe_bench.report experiment=$(1) $(if $(OUT),out=$(OUT))
experiment = $(call sweep,$(1),$(2),$(3)) && $(call report,$(1))

.PHONY: help setup demo test selfcheck test-slow test-gpu table2 table3 table4 table5 figure4 figure4_puzzle tables testbed diagnostics_sweep code_eval_parity bench train_text_mdm train_puzzle_mdm text_testbed

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-18s %s\n", $$1, $$2}'

# Where `make setup` gets torch when none is installed: empty = the package index pip is set up
# with (PyPI serves Linux the CUDA build, several GB); a CPU-only machine passes PyTorch's CPU
# index: `make setup TORCH_INDEX=https://download.pytorch.org/whl/cpu`.
TORCH_INDEX ?=

setup:  ## torch 2.13.0 (if no torch yet; TORCH_INDEX=... picks the index), then the package with dev extras
	$(PYTHON) -c "import torch" 2>/dev/null || $(PYTHON) -m pip install torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PYTHON) -m pip install -e ".[dev]"

demo:  ## a real job on the embedded default model (CPU, a few minutes)
	$(PYTHON) -m boe_bench limit=8

test:  ## the default test suite (what CI runs)
	$(PYTHON) -m pytest -q

selfcheck:  ## gold answers through every scorer, the sandbox's hostile battery, every sampler on tiny
	$(PYTHON) -m boe_bench.selfcheck

test-slow:  ## slow tests only
	$(PYTHON) -m pytest -q -m slow

test-gpu:  ## tests marked gpu (need a CUDA device); says so when none is marked
	@$(PYTHON) -m pytest -q -m gpu; status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test-gpu: no test is marked gpu yet; the GPU paths are measured by python -m boe_bench.bench.<step|decode|reference> --device cuda"; exit 0; fi; \
	exit $$status

table2:  ## Table 2 sweep (LLaDA-8B, GPU) and its report (reports/table2; OUT=results: results/table2)
	$(call experiment,table2)

table3:  ## Table 3 sweep (LLaDA-1.5, GPU) and its report
	$(call experiment,table3)

table4:  ## Table 4 (MDLM rows, then the SEDD row; OWT, T=128); MODEL=tiny LIMIT=2: tiny_mdlm/tiny_sedd on CPU
	$(call sweep,table4,tiny_mdlm,tiny_owt) \
	&& $(TINY_ENV) $(PYTHON) -m boe_bench -m experiment=table4 sampler=sedd_analytic \
	$(if $(filter tiny,$(MODEL)),model=tiny_sedd +profile=tiny_owt,model=sedd_small) $(if $(LIMIT),limit=$(LIMIT)) $(EXTRA) \
	&& $(call report,table4)

table5:  ## Table 5 ablations (GSM8K L=128, one token per step); MODEL=tiny LIMIT=2 on CPU (7 min, 2 shared cores)
	$(call experiment,table5)

figure4:  ## Figure 4 accuracy-NFE sweeps and Pareto plots; MODEL=tiny LIMIT=2 on CPU
	$(call experiment,figure4)

figure4_puzzle:  ## Figure 4's sweep on the trained puzzle model (CPU, about 25 min) -> reports/figure4_puzzle
	$(call experiment,figure4_puzzle)

tables: table2 table3 table4 table5 figure4  ## every paper experiment above

# Training never writes into the package: the run goes to runs/text_mdm, and the shipped model
# changes only by `python -m boe_bench.train.ship_text_mdm runs/text_mdm --step N`.
TEXT_MDM_RUN ?= runs/text_mdm
train_text_mdm:  ## train the text MDM (LLaDA architecture, d1 Sudoku/Countdown; <1 h on 2 CPU cores) and its held-out curve
	$(PYTHON) -m boe_bench.train.text_mdm --out $(TEXT_MDM_RUN)
	$(PYTHON) -m boe_bench.train.text_curve $(TEXT_MDM_RUN)

text_testbed:  ## Table 2's Sudoku/Countdown columns, 11 samplers x L in {128,256}, on text_mdm (CPU) -> reports/text_testbed (OUT=results)
	$(call experiment,text_testbed)

# The experiment modules read configs/<module>/default.yaml; EXTRA adds key=value overrides.
testbed:  ## every sampler on the self-trained puzzle model -> reports/testbed (OUT=results: results/testbed)
	$(PYTHON) -m boe_bench.experiments.testbed out=$(or $(OUT),reports)/testbed $(EXTRA)

diagnostics_sweep:  ## puzzle-model solve rate vs steps, then the boe_exact pass, and the diagnose table -> reports/diagnostics (OUT=results)
	$(PYTHON) -m boe_bench.experiments.diagnostics_sweep out=$(or $(OUT),reports)/diagnostics $(EXTRA)
	$(PYTHON) -m boe_bench.experiments.diagnostics_sweep --config-name=exact out=$(or $(OUT),reports)/diagnostics $(EXTRA)

# REFERENCE: a local copy of HF evaluate's metrics/code_eval/execute.py (empty: our verdicts only).
REFERENCE ?=
code_eval_parity:  ## our sandbox's HumanEval/MBPP verdicts beside code_eval's -> reports/code_eval_parity.csv (OUT=results)
	$(PYTHON) -m boe_bench.experiments.code_eval_parity out=$(or $(OUT),reports)/code_eval_parity.csv $(if $(REFERENCE),reference=$(REFERENCE)) $(EXTRA)

train_puzzle_mdm:  ## train the 9x9 puzzle MDM (400 steps, GPU when present) -> runs/puzzle_mdm; EXTRA='--steps N ...'
	$(PYTHON) -m boe_bench.train.puzzle_mdm $(EXTRA)

bench:  ## CPU cost benchmarks (thread CPU time, ABBA repeats) -> runs/bench; OUT=results/bench to rewrite the committed tables
	$(PYTHON) -m boe_bench.bench.step --lengths 1024 --repeats 3 --out $(or $(OUT),runs/bench)/boe_cost.csv
	$(PYTHON) -m boe_bench.bench.decode --out $(or $(OUT),runs/bench)/boe_decode.csv
	$(PYTHON) -m boe_bench.bench.profile --out $(or $(OUT),runs/bench)/boe_profile.csv --notes results/bench/boe_profile_notes.md
	$(PYTHON) -m boe_bench.bench.reference --out $(or $(OUT),runs/bench)/harness_overhead.csv
