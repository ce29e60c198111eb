"""Gateway API and Fleet status: what was accepted, refused and programmed, and why.

`conditions` computes conditions from the served fleet and what clients hold (pure); `reports`
describes members; `writer` writes status back to the fleet cluster under a Lease.
"""
