"""Snapshot stores: `redis` (one key per snapshot plus a sorted-set index) and `disk` (one file
per snapshot, written atomically). The interface is `jido_tasks.persistence.SnapshotStore`."""
