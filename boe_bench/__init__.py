"""boe_bench: a harness for masked-diffusion samplers (TABES / Backward-on-Entropy steering)."""
from omegaconf import OmegaConf

# `${div:${gen_length},2}`: experiment configs tie steps to the generation length (two
# tokens per step) across a sweep without an eval resolver.
OmegaConf.register_new_resolver("div", lambda a, b: int(a) // int(b), replace=True)
# `${or:${steps},auto}`: a readable stand-in for settings left to the task's default.
OmegaConf.register_new_resolver("or", lambda value, default: default if value is None else value, replace=True)


def _config_hash(*, _root_):
    from boe_bench.runner import config_hash

    return config_hash(_root_)


# `${config_hash:}`: the default out_dir ends in a hash of every result-changing option, so
# a changed option gets its own directory and the identical command finds its own again.
OmegaConf.register_new_resolver("config_hash", _config_hash, replace=True)
