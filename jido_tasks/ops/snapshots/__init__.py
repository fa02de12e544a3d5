"""Session snapshots: the snapshot document and the save, restore, list and delete services
(`service`), with two stores: Redis (`redis`) and a directory on disk (`disk`).

May import what `ops` may import."""
