"""Dataset-scale runs on an existing distributed engine (Ray Data): `auto_annotate(engine="ray")` and
`masklet val engine=ray`. Nothing here is imported unless engine="ray" is asked for."""
