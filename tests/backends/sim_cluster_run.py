"""Run a recipe on simulated engines (bench/sim_engine.py) as Ray actors of the cluster named by
RAY_ADDRESS, the way `generator run` runs it on vLLM engines: `python sim_cluster_run.py RECIPE
OUT REPLICAS`. Used by the two-node test, where what is under test is Ray (placement, a lost
node, requests retried) and not the model, so no engine has to load one."""
from __future__ import annotations

import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

# Short steps, two sequences per engine: a 16-document run takes several seconds, so a node
# lost after the first shard still holds requests.
OPTIONS = dict(step_base_s=0.05, step_per_seq_s=0.0, max_num_seqs=2, median_tokens=20.0, sigma=0.3)


def main(recipe: str, out: str, replicas: str) -> None:
    import ray

    import sim_engine
    from generator.backends.ray import RayBackend
    from generator.recipe import load_recipe
    from generator.run import controller

    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    ray.cloudpickle.register_pickle_by_value(sim_engine)  # the workers need not find bench/
    backend = RayBackend("sim", num_replicas=int(replicas), actor_class=sim_engine.SimEngine, **OPTIONS)
    try:
        controller.run(load_recipe(Path(recipe)), Path(out), backend)
    finally:
        backend.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
