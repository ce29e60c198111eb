"""Translation: the fleet model and a node profile in, Envoy resources out.

It must stay pure: no I/O, no logging, no clock, no state beyond memos. Equal inputs give equal
messages, and unchanged inputs give back the very same message objects, which the cache relies
on to skip re-encoding; callers must never mutate what they get. Each resource kind has its own
module; `snapshot` decides which resources a profile gets.
"""

from xdsfleet.translate.snapshot import Resources, translate

__all__ = ["Resources", "translate"]
