"""Behaviour diffusion model, DPM-Solver++ sampler, CEP energy and energy-guided sampling.

Paper map: VP-SDE schedule (`schedule`), the SfBC/QGPO ScoreNet (`scorenet`), DPM-Solver++
(`sampler`), the energy net f(s, a_t, t), the CEP loss (Eq. 7) and guided noise (Eq. 8-9)
(`energy`), and the `BehaviourModel` bundle with training, sampling, support actions and
save/load (`model`). `similarity` holds action-similarity metrics (Figure 2 diagnostics),
`bench` the speed benchmark.
"""

from stratdiff.diffusion.energy import EnergyNet, cep_loss, guided_noise_fn
from stratdiff.diffusion.model import (
    DATASET_DEFAULTS,
    PRESETS,
    TASK_KIND_DEFAULTS,
    BehaviourModel,
    DatasetDefaults,
    DiffusionConfig,
    dataset_defaults,
    draw_support_actions,
    energy_update,
    energy_update_with_critic,
    load_model,
    resolve_config,
    sample,
    save_model,
    score_loss,
    support_actions,
    support_q_values,
    train_step,
    train_steps,
)
from stratdiff.diffusion.sampler import SamplerConfig, dpm_solver_pp, step_orders
from stratdiff.diffusion.scorenet import ScoreNet
from stratdiff.diffusion.similarity import action_similarity

__all__ = [
    "DATASET_DEFAULTS",
    "PRESETS",
    "TASK_KIND_DEFAULTS",
    "BehaviourModel",
    "DatasetDefaults",
    "DiffusionConfig",
    "EnergyNet",
    "SamplerConfig",
    "ScoreNet",
    "action_similarity",
    "cep_loss",
    "dataset_defaults",
    "dpm_solver_pp",
    "draw_support_actions",
    "energy_update",
    "energy_update_with_critic",
    "guided_noise_fn",
    "load_model",
    "resolve_config",
    "sample",
    "save_model",
    "score_loss",
    "step_orders",
    "support_actions",
    "support_q_values",
    "train_step",
    "train_steps",
]
