"""The names of the datasets `stratdiff data build` makes (`stratdiff.data.builders` builds
them; `stratdiff.data.loaders` names them in its "not built yet" error).

Locomotion: `<env>-<kind>-v5` with env in `ENVS` and kind in `KINDS`. AntMaze: the names in
`ANTMAZE`, each also the id of its evaluation environment.
"""

from __future__ import annotations

import dataclasses

ENVS: dict[str, str] = {"halfcheetah": "HalfCheetah-v5", "hopper": "Hopper-v5", "walker2d": "Walker2d-v5"}
KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")


@dataclasses.dataclass(frozen=True)
class Recipe:
    name: str
    env_id: str
    kind: str


DATASETS: dict[str, Recipe] = {
    f"{short}-{kind}-v5": Recipe(f"{short}-{kind}-v5", env_id, kind)
    for short, env_id in ENVS.items() for kind in KINDS
}
# AntMaze datasets: the name is also the evaluation env id (stratdiff.envs.ENV_SPECS).
ANTMAZE = ("antmaze-umaze-v0", "antmaze-umaze-diverse-v0", "antmaze-medium-play-v0",
           "antmaze-medium-diverse-v0")
DATASETS.update({name: Recipe(name, name, "antmaze") for name in ANTMAZE})


def is_buildable(name: str) -> bool:
    return name in DATASETS


def recipe(name: str) -> Recipe:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; buildable: {', '.join(DATASETS)}")
    return DATASETS[name]
