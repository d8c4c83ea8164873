"""The local Cycles authority: protocol rules, faults, concurrency, fuzzing; answers checked against spec."""
