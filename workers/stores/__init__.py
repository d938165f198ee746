"""What relance keeps in Redis: deliveries, ticket memory, timers, the effects ledger,
timelines, the RQ queue, metrics, and the read side of the operator's pages.
"""
