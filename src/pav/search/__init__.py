"""Test-time search (the paper, §4): best-of-N re-ranking and step-level beam search, scored by a `Scorer`.

`select` picks one of N solutions (verifier argmax, majority vote, weighted vote); `best_of_n`
samples and scores N solutions per problem; `beam` is step-level beam search with the effective
reward, batched across problems; `compare` turns accuracy-vs-compute curves into the paper's
ratios; `stage` is `pav search`; `report` its table and figure.
"""
