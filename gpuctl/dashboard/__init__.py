"""The read-only web dashboard: Fleet, Offers, Cost and Providers pages, updated live.

Served by `gpuctl dashboard` (its own informers) and, with `gpuctl run --ui`, by the
operator under `/ui/` on its health/metrics port (the operator's informer caches).
Every page reads in-memory caches only: one snapshot per change is computed and
shared by every viewer over server-sent events, so viewers add no API-server load.
See docs/dashboard.md.
"""
