"""Testing support shared by the tests and the demo: the demo corpus, its loopback web site and tiny models.

Nothing here imports Dagster.
"""
