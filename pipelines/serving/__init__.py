"""Decisions at the moment of interaction: the online store (Redis) and the decision API.

``store`` owns the store's keys and every read and write of them; ``sync`` loads it from the
lakehouse; ``decisions`` runs the funnel's per-customer core on what the store holds; ``delivery``
takes what the API decides and learns back to the lakehouse (Delta appends, landing files or
Kafka) off the request path; ``api`` is the HTTP face channels call.
"""
