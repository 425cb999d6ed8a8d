"""Replay: a pure, sans-IO model of the IOVA allocator, rcache, flush queues, IOMMU domains and VT-d QI.

Nothing in this package opens files or imports pyarrow: events in, state and findings out.
"""
