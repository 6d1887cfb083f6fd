"""Running sweeps on many GPUs and nodes, through existing Hydra launchers (no scheduler here).

Every job is "one config -> files in its out_dir" and resumes from its records, so any
launcher works and a re-submitted sweep skips finished jobs (summary.json present and
covering every document) without loading a model.

- One node, one GPU per job, Ray (configs/hydra/launcher/ray_gpu.yaml):
    python -m boe_bench -m experiment=table2 hydra/launcher=ray_gpu
- One node, joblib workers, one GPU slot per worker (boe_bench.dispatch.gpuslot):
    python -m boe_bench -m experiment=table2 hydra/launcher=joblib_gpu hydra.launcher.n_jobs=8 gpu_slots=8
- SLURM job array, one GPU per job (configs/hydra/launcher/slurm_gpu.yaml, timeout raised to 24 h):
    python -m boe_bench -m experiment=table2 hydra/launcher=slurm_gpu hydra.launcher.partition=<p>
- One long evaluation split over 8 GPUs: shards are a sweep axis sharing one out_dir, then a
  CPU merge checks the union (no duplicate, none missing) and scores it:
    python -m boe_bench -m task=gsm8k sampler=boe shard.index=0,1,2,3,4,5,6,7 shard.count=8 hydra/launcher=ray_gpu
    python -m boe_bench.merge runs/gsm8k/<model>/boe/<run_name>
Do not use submitit_local to pin GPUs: it gives every job the same CUDA_VISIBLE_DEVICES.
"""
