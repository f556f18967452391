"""Fault injection: bad input, bad environments, signals and crashes, one test per defect."""
