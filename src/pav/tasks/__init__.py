"""Reasoning tasks behind the ``Task`` protocol: problems, prompts, step grammar, grading, demos."""

from pav.tasks.base import Split, Task, join_steps
from pav.tasks.modreach import ModReach, ModReachConfig, StepAnalysis, StepInfo

__all__ = ["ModReach", "ModReachConfig", "Split", "StepAnalysis", "StepInfo", "Task", "join_steps"]
