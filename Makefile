# `make help` lists the targets.
PYTHON ?= python
MODEL ?=
LIMIT ?=
EXTRA ?=
# MODEL=tiny runs every cell of an experiment on CPU: a tiny random model ($(2) when given,
# e.g. tiny_mdlm for Table 4) and the task slices in tests/fixtures (configs/profile/$(3) or tiny).
TINY = model=$(or $(2),tiny) +profile=$(or $(3),tiny)
sweep = $(PYTHON) -m boe_bench -m experiment=$(1) progress=false \
	$(if $(filter tiny,$(MODEL)),$(TINY),$(if $(MODEL),model=$(MODEL))) $(if $(LIMIT),limit=$(LIMIT)) $(EXTRA)
experiment = $(call sweep,$(1),$(2),$(3)) && $(PYTHON) -m boe_bench.report experiment=$(1)

.PHONY: help setup demo test test-slow test-gpu table2 table3 table4 table5 figure4 figure4_puzzle tables testbed bench

help:  ## list targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-14s %s\n", $$1, $$2}'

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

table2:  ## Table 2 sweep (LLaDA-8B, GPU) and its report under results/table2
	$(call experiment,table2)

table3:  ## Table 3 sweep (LLaDA-1.5, GPU) and its report
	$(call experiment,table3)

table4:  ## Table 4 (MDLM rows, then the SEDD row; OWT, T=128); MODEL=tiny LIMIT=2: tiny_mdlm/tiny_sedd on CPU
	$(call sweep,table4,tiny_mdlm,tiny_owt) \
	&& $(PYTHON) -m boe_bench -m experiment=table4 progress=false sampler=sedd_analytic \
	$(if $(filter tiny,$(MODEL)),model=tiny_sedd +profile=tiny_owt,model=sedd_small) $(if $(LIMIT),limit=$(LIMIT)) $(EXTRA) \
	&& $(PYTHON) -m boe_bench.report experiment=table4

table5:  ## Table 5 ablations (GSM8K L=128, one token per step); `make table5 MODEL=tiny LIMIT=4` runs on CPU
	$(call experiment,table5)

figure4:  ## Figure 4 accuracy-NFE sweeps and Pareto plots; MODEL=tiny LIMIT=2 on CPU
	$(call experiment,figure4)

figure4_puzzle:  ## Figure 4's sweep on the trained puzzle model (CPU, about 25 min) -> results/figure4_puzzle
	$(call experiment,figure4_puzzle)

tables: table2 table3 table4 table5 figure4  ## every paper experiment above

testbed:  ## every sampler on the self-trained puzzle model -> results/testbed
	$(PYTHON) scripts/testbed.py

bench:  ## CPU cost benchmarks (thread CPU time, ABBA repeats) -> runs/bench; OUT=results/bench to rewrite the committed tables
	$(PYTHON) -m boe_bench.bench.step --lengths 1024 --repeats 3 --out $(or $(OUT),runs/bench)/boe_cost.csv
	$(PYTHON) -m boe_bench.bench.decode --out $(or $(OUT),runs/bench)/boe_decode.csv
	$(PYTHON) -m boe_bench.bench.profile --out $(or $(OUT),runs/bench)/boe_profile.csv --notes results/bench/boe_profile_notes.md
	$(PYTHON) -m boe_bench.bench.reference --out $(or $(OUT),runs/bench)/harness_overhead.csv
