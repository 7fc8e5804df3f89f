"""pav's tests. A regular package, so worker processes that import a test module by name find
this one, not a `tests` package some dependency installs (OpenRLHF and verl ship one)."""
