"""``make demo``: the whole story on one machine (see :mod:`demo.__main__`)."""
