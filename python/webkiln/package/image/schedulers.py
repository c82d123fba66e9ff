"""The model's scheduler as the manifest records it: diffusers' scheduler_config.json with
diffusers' defaults filled in (manifest.ModelSchedulerConfig), checked against what the
browser's schedulers implement, so an unsupported config fails at build time."""

from __future__ import annotations

import dataclasses
import json

from ...sources.diffusers_folder import DiffusersPipeline
from ..manifest import SCHEDULER_CLASSES, ModelSchedulerConfig, SchedulerName
from .errors import ImageBuildError

_SUPPORTED = {"beta_schedule": ("linear", "scaled_linear", "squaredcos_cap_v2"),
              "prediction_type": ("epsilon", "v_prediction"),
              "timestep_spacing": ("leading", "trailing", "linspace")}


def scheduler_config(pipeline: DiffusersPipeline) -> ModelSchedulerConfig:
    raw = {k: v for k, v in pipeline.scheduler.items() if k != "_diffusers_version"}
    class_name = raw.pop("_class_name", None)
    # A null in the file means "the default", except for trained_betas whose default is null.
    given = {k: v for k, v in raw.items() if v is not None or k == "trained_betas"}
    named = {f.name for f in dataclasses.fields(ModelSchedulerConfig)} - {"class_name", "other"}  # the file's own fields
    config = ModelSchedulerConfig(class_name, **{k: v for k, v in given.items() if k in named},
                             other={k: v for k, v in given.items() if k not in named})
    where = f"{pipeline.origin}/scheduler/scheduler_config.json"
    for field, supported in _SUPPORTED.items():
        if getattr(config, field) not in supported:
            raise ImageBuildError(f"{where}: unsupported {field} {json.dumps(getattr(config, field))}; the "
                                  f"browser's schedulers support {', '.join(json.dumps(s) for s in supported)}.")
    n = config.num_train_timesteps
    if not isinstance(n, int) or n <= 0:
        raise ImageBuildError(f"{where}: num_train_timesteps must be a positive integer, got {n!r}.")
    betas = config.trained_betas
    if betas is not None and (not isinstance(betas, list) or len(betas) != n):
        raise ImageBuildError(f"{where}: trained_betas must be null or a list of num_train_timesteps ({n}) numbers.")
    return config


def default_scheduler(config: ModelSchedulerConfig) -> SchedulerName:
    """What the browser samples with when a request names no scheduler: the model's own class
    when the browser implements it, else Euler."""
    return SCHEDULER_CLASSES.get(config.class_name or "", "euler")
