"""Fixtures: the built-in task and its noisy expert as a policy, for fast labelling tests without an LM."""

import pytest

from pav.rollouts.expert import ExpertPolicy
from pav.tasks.modreach import ModReach


@pytest.fixture
def task():
    return ModReach()


@pytest.fixture
def expert(task):
    return ExpertPolicy(task)
