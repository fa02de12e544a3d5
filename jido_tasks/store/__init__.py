"""Everything that talks to Redis: key names (`keys`), connections and error translation
(`connection`), and the Lua scripts with their typed Python functions (`scripts`, `lua/`)."""
