"""`pav demo`: the whole pipeline on the built-in task, cached stage by stage, and its report."""
