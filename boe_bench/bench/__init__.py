"""Cost benchmarks: what BoE costs next to Confidence, measured, beside what it accounts.

Every module here is an entry point, ``python -m boe_bench.bench.<name> --help``:

- ``step``: one decoding step of each variant, and the live-row vs dense backward (``boe_cost``);
- ``decode``: whole GSM8K-shaped decodes, BoE readings x rho vs Confidence (``boe_decode``);
- ``profile``: where one BoE step's time goes next to one Confidence step (``boe_profile``);
- ``reference``: our ``confidence`` decode vs a rewrite of LLaDA's ``generate.py`` loop
  (``harness_overhead``);
- ``throughput``: Confidence's batch throughput;
- ``readings``: solve rate and cost of the BoE readings on the puzzle model (``boe_readings``).

Timing method (``common``): on a CPU, per-thread CPU time (``time.thread_time``, one torch
thread, so all of torch's work runs on the timed thread) beside wall clock; on a GPU, CUDA
events. Variants run interleaved (ABBA: forward order on even repeats, reversed on odd),
every ratio is taken per repeat against the baseline of the same repeat, and a ratio whose
repeats spread more than 10% is flagged rather than reported as met. Rows name the machine
and carry the load average. Output goes under ``runs/bench/`` unless ``--out`` names a file:
committed ``results/bench/`` files are written only when asked for by name.
"""
