"""The metrics and sessions web app (`app`, `metrics`, `pages`) and the containers' health
probe (`probe`). Served by `jido-tasks metrics` and `jido-tasks up` (`cli.serve`).

May import what `ops` may import."""
