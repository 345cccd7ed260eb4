"""``footage``: the client for owners and requesters.

It speaks to a relay over HTTPS and checks everything it is given itself (signatures,
proofs, hashes).  It imports only :mod:`protocol` and :mod:`common`.
"""
