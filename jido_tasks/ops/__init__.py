"""Operating jido-tasks: the sweep (`sweep`), snapshots and their stores (`snapshots`),
read-only monitoring (`monitoring`), the metrics and sessions web app (`web`), Flower with
auth on its monitor views (`flower`), the key layout migration (`migrate`), start-up checks
(`checks`) and log formats (`logs`).

May import: the base modules, `store` and `core`. Never `client`, `worker` or `cli`: the
client and the worker call these services, not the other way round (the web app is handed a
`Client` by `cli.serve`).
"""
