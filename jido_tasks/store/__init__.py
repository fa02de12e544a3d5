"""Everything that talks to Redis: key names (`keys`), connections and error translation
(`connection`, `aio`), the typed face of the redis client (`protocols`), the Lua scripts with
their typed Python functions (`scripts`, `lua/`), slot-group index reads (`groups`), by-name
results in Celery's result backend (`results`) and the broker transport with the reliable
fetch (`transport`: workers fetch through it, clients publish through it).

May import: the base modules (`errors`, `models`, `settings`) only.
"""
