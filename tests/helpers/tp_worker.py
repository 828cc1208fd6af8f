"""One rank of the tensor-parallel check (run under torchrun with 2 CPU processes, gloo).

Loads the tiny model saved by the test with heads split across ranks (in the dtype named by
the optional third argument, e.g. ``float64``; the saved one otherwise), enables the
transition, and rank 0 writes the logits and the number of query heads each rank saw.
"""

import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import attn_transition as at  # noqa: E402
from tiny_models import ids  # noqa: E402


def main(folder: str, n: int, dtype: str = "") -> None:
    from transformers import AutoModelForCausalLM

    torch.distributed.init_process_group("gloo")
    import inspect

    try:
        from transformers.distributed import DistributedConfig
    except ImportError:
        DistributedConfig = None
    if DistributedConfig is not None and "tp_plan" in inspect.signature(DistributedConfig).parameters:
        placement = dict(distributed_config=DistributedConfig(tp_plan="auto"))
    else:                                                 # transformers 4.x: the keyword itself
        placement = dict(tp_plan="auto")
    if dtype:
        placement["dtype"] = getattr(torch, dtype)
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa", **placement).eval()
    heads = []
    layer = model.model.layers[2].self_attn
    layer.register_forward_hook(lambda m, a, kw, out: heads.append(m.q_proj(kw["hidden_states"]).shape[-1] // 8),
                                with_kwargs=True)
    at.enable(model, at.ClassicConfig(min_length=0, beta=0.5))
    with torch.no_grad():
        logits = model(ids(1, n, seed=14)).logits
    seen = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(seen, heads[0])
    if torch.distributed.get_rank() == 0:
        torch.save(logits, os.path.join(folder, "tp_logits.pt"))
        with open(os.path.join(folder, "tp_heads.json"), "w") as fh:
            json.dump(seen, fh)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), *sys.argv[3:4])
