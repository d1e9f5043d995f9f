"""The running instance: programs its units and its admin run (backup, restore)."""
