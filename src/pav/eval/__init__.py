"""Evaluation of a policy on a task from its sampled solutions (`pav eval-policy`)."""
