"""``segany compare``: one workload against each target, side by side, with cost.

This package holds the cost half: the price table (``prices``), the workload file
(``workload``), the targets' settings (``targets``), seconds per request (``timing``) and the
monthly cost model with break-even points (``costs``). See docs/compare.md.
"""
