"""docs/scaling.md's planned half: TorchRec's plans for TwHIN at 10^9 edges on H100 clusters, and
their costs.

assumptions (cluster, graph, batch) -> planner (TorchRec's planner on CPU, the trainer's inputs)
-> costs (memory, bytes, step time of a plan) and ranking (sharded ranking's time) -> report (one
cluster size) -> doc, analysis and advice (the markdown). Entry point: benchmarks/scaling_plan.py
(`make scaling-doc`).
"""
