"""Test actions, imported by worker subprocesses through the `action_modules` setting."""
