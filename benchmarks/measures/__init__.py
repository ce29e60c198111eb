"""One module per measure, each selectable on the command line (`python -m benchmarks NAME`).

A measure takes its options, runs, and returns a `report.Section`; none prints.
"""
