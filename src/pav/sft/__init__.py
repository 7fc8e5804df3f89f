"""Supervised fine-tuning of the base policy π on a task's demonstrations (`pav sft`)."""
