"""Reasoning tasks behind the ``Task`` protocol: problems, prompts, step grammar, grading, demos.

The public task API, all a task plug-in needs (docs/your-task.md): `Task` (the protocol), `Problem`
(what ``problems`` returns), `Split`, `join_steps` and `split_steps` (the step rule every sampler
applies: a blank line never becomes a step); and for code that loads tasks, `TaskConfig`,
`build_task` and `TaskPluginError`.
"""

from pav.core.records import Problem
from pav.core.steps import split_steps
from pav.tasks.base import Split, Task, join_steps
from pav.tasks.build import TaskConfig, TaskPluginError, build_task, check_task
from pav.tasks.modreach import ModReach, ModReachConfig, StepAnalysis, StepInfo

__all__ = ["ModReach", "ModReachConfig", "Problem", "Split", "StepAnalysis", "StepInfo", "Task", "TaskConfig",
           "TaskPluginError", "build_task", "check_task", "join_steps", "split_steps"]
